"""Configuration of benchsuite's ChatGLM-style remote-code model."""
try:
    from transformers import PreTrainedConfig as _BaseConfig  # transformers >= 5
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig


class ChatGLMConfig(_BaseConfig):
    model_type = "chatglm"

    def __init__(self, num_layers=2, padded_vocab_size=256, hidden_size=64, ffn_hidden_size=128,
                 kv_channels=16, num_attention_heads=4, seq_length=128, layernorm_epsilon=1e-5,
                 hidden_dropout=0.0, classifier_dropout=None, use_cache=True, **kwargs):
        self.num_layers = num_layers
        self.padded_vocab_size = padded_vocab_size
        self.vocab_size = padded_vocab_size
        self.hidden_size = hidden_size
        self.ffn_hidden_size = ffn_hidden_size
        self.kv_channels = kv_channels
        self.num_attention_heads = num_attention_heads
        self.seq_length = seq_length
        self.layernorm_epsilon = layernorm_epsilon
        self.hidden_dropout = hidden_dropout
        self.classifier_dropout = classifier_dropout
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)  # as ChatGLM's own config: output layer not tied
        super().__init__(**kwargs)
