"""Reading an error as users paste it (a whole traceback, their own paths and line numbers, wrapped lines,
their model's class names, warnings printed by ``warnings`` or a logger) and scoring how well a case's
declared symptom explains it."""
from __future__ import annotations

import builtins
import re

# "ValueError: ...", "torch.OutOfMemoryError: ...", pytest's "E   TypeError: ..."
_EXC = re.compile(r"^\s*(?:E\s+)?((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure))"
                  r"(?::\s?(.*))?$")
# warnings.showwarning's "path.py:12: UserWarning: message"
_WARN = re.compile(r":\d+: ([A-Z]\w*Warning): (.*)$")
_FRAME = re.compile(r"^\s*(File \"|Traceback \(most recent call last\)|During handling|The above exception|\^+\s*$|"
                    r"~+\s*$)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOP = {"the", "and", "for", "not", "with", "that", "this", "was", "are", "has", "have", "from", "none", "true",
         "false", "got", "use", "set", "one", "all", "any", "its", "but", "when", "your", "you", "model"}


def parse(text: str) -> dict:
    """{"exceptions": [(class, message)], "warnings": [(class, message)], "flat": str, "joined": str}:
    ``flat`` is the text with its lines joined by spaces and whitespace collapsed; ``joined`` joins lines
    without a space, for words a terminal wrapped in the middle."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    exceptions, warnings_ = [], []
    for i, line in enumerate(lines):
        w = _WARN.search(line)
        if w:
            warnings_.append((w.group(1), w.group(2).strip()))
            continue
        m = _EXC.match(line)
        if not m:
            continue
        msg = [m.group(2) or ""]
        for nxt in lines[i + 1:]:  # a message may go on over several lines until the next frame
            if not nxt.strip() or _FRAME.match(nxt) or _EXC.match(nxt):
                break
            msg.append(nxt.strip())
        exceptions.append((m.group(1), " ".join(s for s in msg if s).strip()))
    flat = " ".join(" ".join(lines).split())
    joined = "".join(ln.strip() for ln in lines)
    return {"exceptions": exceptions, "warnings": warnings_, "flat": flat, "joined": joined}


def _short(cls: str) -> str:
    return cls.rsplit(".", 1)[-1]


def _class_matches(declared: str, seen: str) -> bool:
    """The pasted class is the declared one, or a builtin subclass of it (KeyError for LookupError)."""
    if _short(declared) == _short(seen):
        return True
    a, b = getattr(builtins, _short(declared), None), getattr(builtins, _short(seen), None)
    return isinstance(a, type) and isinstance(b, type) and issubclass(b, a)


def specificity(pattern: str) -> float:
    """How much a regex says, 0..1: its literal letters and digits (escapes and operators left out) over 30.
    A pattern like r"weight" matches many errors and weighs little; a whole message weighs 1."""
    literal = re.sub(r"\\[A-Za-z]|\[[^\]]*\]|[^\w]", "", pattern)
    return min(1.0, len(literal) / 30.0)


def _search(pattern: str, *texts: str) -> bool:
    for t in texts:
        try:
            if re.search(pattern, t, re.S):
                return True
        except re.error:
            return False
    return False


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and not w.isdigit()}


def score(pasted: dict, symptom: dict, title: str = "") -> tuple[float, list[str]]:
    """(score, why) of a case whose symptom declares ``exception``/``message``/``warning`` (regexes) against
    a parsed paste. 0 when nothing of it matches."""
    exc, msg, warn = symptom.get("exception"), symptom.get("message"), symptom.get("warning")
    why: list[str] = []
    total = 0.0
    seen_classes = [c for c, _ in pasted["exceptions"]] + [c for c, _ in pasted["warnings"]]
    class_seen = bool(exc and any(_class_matches(exc, c) for c in seen_classes))
    if class_seen:
        total += 2.0
        why.append(f"{exc} is the declared exception")
    messages = [" ".join(m.split()) for _, m in pasted["exceptions"]]
    if msg:
        if _search(msg, *messages):
            total += 4.0 + 4.0 * specificity(msg)
            why.append(f"the error message matches /{msg}/")
        # Elsewhere in the text (a message wrapped past the parser) only when the error could be the declared one:
        # in another exception's traceback the pattern is a coincidence of its source lines.
        elif (class_seen or not exc or not pasted["exceptions"]) and _search(msg, pasted["flat"], pasted["joined"]):
            total += 3.0 + 4.0 * specificity(msg)
            why.append(f"the text matches the declared message /{msg}/")
    if warn and _search(warn, pasted["flat"], pasted["joined"]):
        total += 3.0 + 4.0 * specificity(warn)
        why.append(f"the text matches the declared warning /{warn}/")
    if total >= 3.0:  # a pattern matched: prefer the case that also names what is particular to this error
        theirs = words(" ".join(messages + [m for _, m in pasted["warnings"]]))
        ours = words(" ".join(filter(None, [title, re.sub(r"\\.", " ", msg or ""), re.sub(r"\\.", " ", warn or "")])))
        if theirs:
            shared = theirs & ours
            total += 3.0 * len(shared) / len(theirs)
    if total < 3.0:  # no regex matched: how many of the case's words the error shares
        theirs = words(" ".join(messages + [m for _, m in pasted["warnings"]]) or pasted["flat"])
        ours = words(" ".join(filter(None, [title, re.sub(r"\\.", " ", msg or ""), re.sub(r"\\.", " ", warn or "")])))
        shared = theirs & ours
        if ours and len(shared) >= 3:
            overlap = len(shared) / len(ours)
            if overlap >= 0.4:
                total += 3.0 * overlap
                why.append(f"shares the words {', '.join(sorted(shared)[:6])} with the case (no pattern matched)")
    return (round(total, 3), why) if total >= 2.5 else (0.0, [])
