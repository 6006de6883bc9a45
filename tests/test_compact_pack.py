"""A CLIP trained with a cut-down vocabulary goes through the real exporter (`--tokenizer`), and
commands without --pack find the demo pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zsris_rt.export.cli import main as export_main


@pytest.fixture(scope="module")
def compact_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsris_rt.export.clip_model import ClipConfig, ClipModel, random_init_
    from zsris_rt.export.compact_vocab import compact_clip_tokenizer
    from zsris_rt.export.demo_clip import DEMO_CONFIG, WORDS

    folder = tmp_path_factory.mktemp("compact")
    tokenizer = compact_clip_tokenizer(WORDS)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = ClipConfig(vocab_size=tokenizer.get_vocab_size(), **DEMO_CONFIG)
    torch.save(random_init_(ClipModel(config), 4).state_dict(), folder / "clip.pt")
    return folder


@pytest.fixture(scope="module")
def compact_pack(compact_checkpoint: Path) -> Path:
    out = compact_checkpoint / "pack"
    assert export_main(["clip", str(compact_checkpoint / "clip.pt"), "--tokenizer",
                        str(compact_checkpoint / "tokenizer.json"), "--out", str(out)]) == 0
    return out


def test_compact_pack_records_its_special_tokens(compact_pack: Path):
    clip = json.loads((compact_pack / "manifest.json").read_text())["clip"]
    vocab = clip["vocab_size"]
    assert vocab < 1000
    assert (clip["start_token"], clip["end_token"]) == (vocab - 2, vocab - 1)


def test_compact_pack_text_features_match_pytorch(compact_pack: Path, compact_checkpoint: Path,
                                                 simple_tokenizer):
    """The runtime's text features equal the PyTorch model's on ids built here from OpenAI's own
    tokenizer's token strings."""
    from zsris_rt import Segmenter
    from zsris_rt.export.clip_model import ClipConfig, ClipModel
    from zsris_rt.export.demo_clip import DEMO_CONFIG

    vocab = json.loads((compact_checkpoint / "tokenizer.json").read_text())["model"]["vocab"]
    state = torch.load(compact_checkpoint / "clip.pt")
    model = ClipModel(ClipConfig(vocab_size=len(vocab), **DEMO_CONFIG))
    model.load_state_dict(state)
    seg = Segmenter.from_pack(compact_pack)
    for text in ("the big red circle", "the second triangle from the left", "a purple mug"):
        _, sentence, _, _ = seg.encode_text(text)
        tokens = [simple_tokenizer.decoder[i] for i in simple_tokenizer.encode(text)]
        ids = [vocab["<|startoftext|>"], *(vocab[t] for t in tokens if t in vocab),
               vocab["<|endoftext|>"]]
        if any(t not in vocab for t in tokens):  # an unknown word: byte pieces, checked apart
            continue
        with torch.no_grad():
            expected = model.encode_text(torch.tensor([ids]), torch.tensor([len(ids) - 1]))[0]
        np.testing.assert_allclose(sentence, expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("problem", ["size", "specials", "garbage", "absent"])
def test_a_wrong_tokenizer_is_refused_in_one_line(problem: str, compact_checkpoint: Path,
                                                  tmp_path: Path, capsys):
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    if problem == "size":
        from zsris_rt.export.compact_vocab import compact_clip_tokenizer

        compact_clip_tokenizer(["zebra"]).save(str(path))
    elif problem == "specials":
        vocab = {f"t{i}": i for i in range(len(json.loads(
            (compact_checkpoint / "tokenizer.json").read_text())["model"]["vocab"]) + 2)}
        Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(path))
    elif problem == "garbage":
        path.write_text("{not json")
    out = tmp_path / "pack"
    code = export_main(["clip", str(compact_checkpoint / "clip.pt"), "--tokenizer", str(path),
                        "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("zsris-export clip: error:") and "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_a_compact_checkpoint_without_its_tokenizer_is_refused(compact_checkpoint: Path,
                                                               tmp_path: Path, capsys):
    code = export_main(["clip", str(compact_checkpoint / "clip.pt"), "--out",
                        str(tmp_path / "pack")])
    assert code == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_default_pack_order(monkeypatch, tmp_path: Path, compact_pack: Path):
    from zsris_rt import pack
    from zsris_rt.errors import PackError

    monkeypatch.setattr(pack, "DEMO_PACK", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZSRIS_PACK", raising=False)
    with pytest.raises(PackError, match="--pack"):
        pack.default_pack()
    local = tmp_path / "engines" / "demo"
    local.parent.mkdir()
    local.symlink_to(compact_pack)
    assert pack.default_pack() == Path.cwd() / "engines" / "demo"
    monkeypatch.setattr(pack, "DEMO_PACK", compact_pack)
    assert pack.default_pack() == compact_pack
    monkeypatch.setenv("ZSRIS_PACK", str(tmp_path / "elsewhere"))
    assert pack.default_pack() == tmp_path / "elsewhere"


def test_cli_without_a_pack_says_so_in_one_line(monkeypatch, tmp_path: Path, capsys):
    from zsris_rt import pack
    from zsris_rt.commands.main import main

    monkeypatch.setattr(pack, "DEMO_PACK", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZSRIS_PACK", raising=False)
    image = Path(__file__).resolve().parent.parent / "examples" / "scene-1.png"
    assert main([str(image), "the red circle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no --pack given" in err[0]
