"""Build the CLIP BPE `tokenizer.json` offline, from the merges file an installed package ships.

OpenAI's vocabulary is a pure function of the merges list: the 256 byte symbols, the same with the
end-of-word marker `</w>`, one symbol per merge, then the two specials. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.metadata
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from zsris_rt.errors import ZsrisError

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"
# OpenAI's pre-tokeniser pattern (specials first so they stay whole).
PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
           r"|[^\s\p{L}\p{N}]+")


def find_merges_file() -> Path:
    """The BPE merges as shipped inside the `openai-clip` distribution (read, never imported)."""
    for dist in ("openai-clip", "clip-anytorch", "open-clip-torch"):
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.name == MERGES_FILE:
                return Path(str(file.locate()))
    raise ZsrisError(f"no {MERGES_FILE} found: install the export extra (pip install "
                     "'zsris-rt[export]'), which ships it inside the openai-clip package")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map, which CLIP's BPE is defined over."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    # Order matters: the vocabulary lists the printable bytes first, then the remapped ones.
    mapping = {b: chr(b) for b in keep}
    for extra, b in enumerate(b for b in range(256) if b not in mapping):
        mapping[b] = chr(256 + extra)
    return mapping


def clip_vocab_and_merges(merges_path: Path | None = None) -> tuple[dict[str, int],
                                                                     list[tuple[str, str]]]:
    path = merges_path or find_merges_file()
    lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(pair) for pair in merges]
    symbols += [START, END]
    return {s: i for i, s in enumerate(symbols)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(merges_path: Path | None = None) -> Tokenizer:
    return clip_tokenizer(*clip_vocab_and_merges(merges_path))


def clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """OpenAI's word split, then GPT-2's byte → symbol map: the pieces BPE runs on."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """CLIP's BPE pipeline (normaliser, pre-tokeniser, template) over a vocabulary and merges:
    OpenAI's whole list, or a subset that keeps its order (see compact_vocab.py)."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=END,
                               end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = clip_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, vocab[START]), (END, vocab[END])])
    tok.add_special_tokens([START, END])
    return tok

