"""A small ChatGLM2/3-style model written for benchsuite (not ChatGLM's code).

It keeps what matters to the reported failures: forwards without ``output_attentions`` or
``**kwargs``, the old ``_set_gradient_checkpointing(module, value)`` API, its own
``torch.utils.checkpoint.checkpoint`` call without ``use_reentrant``, and ChatGLM's module names
(``query_key_value``, ``dense``, ``dense_h_to_4h``, ``dense_4h_to_h``, ``classifier_head``).
"""
