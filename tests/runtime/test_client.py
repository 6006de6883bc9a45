"""zsris_rt.client against a real `zsris-rt serve` on a loopback port: the same answers as the
library, errors as ZsrisErrors, and `zsris-rt IMAGE TEXT --server URL` printing a local run's
output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_process import serving

from zsris_rt import Segmenter
from zsris_rt.client import Client, RemoteResult, RequestError, ServiceUnavailable
from zsris_rt.errors import ZsrisError
from zsris_rt.image import read_image

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "examples" / "scene-2.png"
MASKS = ROOT / "examples" / "scene-2_masks.npz"
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(token=TOKEN) as process:
        yield process.url


@pytest.fixture(scope="module")
def client(server: str) -> Client:
    return Client(server, token=TOKEN)


@pytest.fixture(scope="module")
def local() -> Segmenter:
    return Segmenter.from_pack(threads=1)


def test_segment_gives_the_library_answer(client: Client, local: Segmenter) -> None:
    texts = ["the big yellow star", "the small green star"]
    remote = client.segment(SCENE, texts)
    scene = local.encode_image(SCENE)
    for text, result in zip(texts, remote, strict=True):
        want = local.query(scene, text)
        assert isinstance(result, RemoteResult)
        assert (result.index, result.text, result.noun_phrase) == (want.index, text,
                                                                   want.noun_phrase)
        assert result.score == pytest.approx(want.score, abs=1e-4)
        np.testing.assert_allclose(result.scores, want.scores, atol=1e-4)
        np.testing.assert_array_equal(result.mask, want.mask)
        assert result.box == want.box and result.geometry == want.geometry


def test_inputs_as_arrays_and_bytes(client: Client, local: Segmenter) -> None:
    image = read_image(SCENE)
    masks = np.load(MASKS)["masks"]
    from_array = client.segment(image, "the big yellow star", masks=masks)[0]
    from_bytes = client.segment(SCENE.read_bytes(), "the big yellow star",
                                masks=MASKS.read_bytes())[0]
    want = local.segment(image, "the big yellow star", masks)
    assert from_array.index == from_bytes.index == want.index
    assert from_array.score == pytest.approx(want.score, abs=1e-4)


def test_encode_once_query_many_then_delete(client: Client, local: Segmenter) -> None:
    scene_id = client.encode(SCENE, masks=MASKS)
    first = client.query(scene_id, ["the big yellow star", "the small green star"])
    again = client.query(scene_id, "the big yellow star", alpha=0.9, beta=0.3)[0]
    want = local.query(local.encode_image(SCENE, np.load(MASKS)["masks"]),
                       "the big yellow star", alpha=0.9, beta=0.3)
    assert [r.text for r in first] == ["the big yellow star", "the small green star"]
    assert (again.alpha, again.beta, again.index) == (0.9, 0.3, want.index)
    assert again.score == pytest.approx(want.score, abs=1e-4)
    client.delete(scene_id)
    with pytest.raises(RequestError, match="no scene") as gone:
        client.query(scene_id, "the star")
    assert gone.value.status == 404


def test_errors_are_one_line_zsris_errors(client: Client, server: str) -> None:
    with pytest.raises(RequestError, match="expression is empty") as empty:
        client.segment(SCENE, "   ")
    assert empty.value.status == 422
    with pytest.raises(RequestError, match="alpha") as alpha:
        client.segment(SCENE, "the star", alpha=1.5)
    assert alpha.value.status == 422
    with pytest.raises(RequestError, match="token") as token:
        Client(server).segment(SCENE, "the star")
    assert token.value.status == 401
    assert Client(server).health()["status"] == "ok"  # /health needs no token
    with pytest.raises(ServiceUnavailable, match="cannot reach"):
        Client("http://127.0.0.1:1").health()
    with pytest.raises(ZsrisError, match="http"):
        Client("127.0.0.1:8321")


def zsris_rt(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zsris_rt.commands", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_the_command_prints_what_a_local_run_prints(server: str, tmp_path: Path) -> None:
    argv = [str(SCENE), "the big yellow star", "the small green star"]
    local = zsris_rt(*argv, "--out", str(tmp_path / "l.png"), "--overlay", str(tmp_path / "lo.png"))
    remote = zsris_rt(*argv, "--server", server, "--out", str(tmp_path / "r.png"), "--overlay",
                      str(tmp_path / "ro.png"), env={"ZSRIS_TOKEN": TOKEN})
    assert local.returncode == remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and remote.stdout.count("\n") == 2
    for number in (1, 2):
        assert (tmp_path / f"r-{number}.png").read_bytes() == \
            (tmp_path / f"l-{number}.png").read_bytes()
        assert (tmp_path / f"ro-{number}.png").read_bytes() == \
            (tmp_path / f"lo-{number}.png").read_bytes()


@pytest.mark.parametrize("extra, words", [
    (["--local-top", "3"], "--local-top: for a local run only"),
    (["--masks", "nowhere.npz"], "mask file not found"),
    ([], "missing or wrong token"),
])
def test_the_command_refuses_cleanly(server: str, extra: list[str], words: str) -> None:
    done = zsris_rt(str(SCENE), "the star", "--server", server, *extra,
                    env={"ZSRIS_TOKEN": TOKEN} if extra else {"ZSRIS_TOKEN": ""})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr
