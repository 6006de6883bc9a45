"""The ROS 2 node's parts that run without ROS: message fields ↔ arrays
(zsris_rt.ros2.conversions), the frame logic over a ServiceCore on the demo pack
(zsris_rt.ros2.frames), and zsris_rt.ros2.node's one-line refusal where rclpy is missing."""

from __future__ import annotations

import array
import json
import sys
import threading

import cv2
import numpy as np
import pytest

from zsris_rt.errors import ImageError, TextError, ZsrisError
from zsris_rt.mask_io import from_coco_rle
from zsris_rt.ros2.conversions import (
    detections_from_results,
    expressions_from_text,
    image_from_compressed,
    image_from_msg_fields,
    mask_to_mono8_fields,
)
from zsris_rt.ros2.frames import FrameSegmenter, NoFrame
from zsris_rt.service.core import Busy, ServiceConfig, ServiceCore

from .conftest import EXAMPLES

# A 3×5 RGB image written by hand: pixel (y, x) = (10y + x, 100 + 10y + x, 200 + y + x).
RGB = np.array([[[10 * y + x, 100 + 10 * y + x, 200 + y + x] for x in range(5)]
                for y in range(3)], dtype=np.uint8)
PAD = 3  # bytes of padding at the end of each row


def rows(pixel_bytes, channels: int, pad: int = PAD) -> bytes:
    """The message's data: each row's pixels as `pixel_bytes(y, x)`, then `pad` bytes of 0xEE."""
    out = bytearray()
    for y in range(3):
        for x in range(5):
            out += bytes(pixel_bytes(y, x))
        out += b"\xee" * pad
    assert len(out) == 3 * (5 * channels + pad)
    return bytes(out)


def px(y: int, x: int) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in RGB[y, x])
    return r, g, b


@pytest.mark.parametrize("encoding, channels, pixel", [
    ("rgb8", 3, lambda y, x: px(y, x)),
    ("bgr8", 3, lambda y, x: px(y, x)[::-1]),
    ("rgba8", 4, lambda y, x: (*px(y, x), 77)),
    ("bgra8", 4, lambda y, x: (*px(y, x)[::-1], 77)),
])
def test_colour_encodings_with_row_padding(encoding, channels, pixel):
    data = rows(pixel, channels)
    step = 5 * channels + PAD
    for bigendian in (0, 1):  # 8-bit channels: the flag changes nothing
        for wrapped in (data, bytearray(data), array.array("B", data), list(data)):
            got = image_from_msg_fields(encoding, 3, 5, step, wrapped, bigendian)
            assert got.dtype == np.uint8 and got.shape == (3, 5, 3)
            assert np.array_equal(got, RGB), encoding


def test_mono8_is_grey_in_every_channel():
    grey = lambda y, x: (10 * y + x,)  # noqa: E731
    got = image_from_msg_fields("mono8", 3, 5, 5 + PAD, rows(grey, 1))
    expected = np.array([[10 * y + x for x in range(5)] for y in range(3)], dtype=np.uint8)
    assert got.shape == (3, 5, 3)
    for c in range(3):
        assert np.array_equal(got[..., c], expected)


def test_unpadded_rows_and_a_missing_last_padding_are_read():
    data = rows(px, 3, pad=0)
    assert np.array_equal(image_from_msg_fields("rgb8", 3, 5, 15, data), RGB)
    padded = rows(px, 3)
    assert np.array_equal(image_from_msg_fields("rgb8", 3, 5, 18, padded[:-PAD]), RGB)


def test_truncated_data_and_short_steps_are_refused():
    data = rows(px, 3)
    with pytest.raises(ImageError, match=r"50 bytes of data.*needs 54"):
        image_from_msg_fields("rgb8", 3, 5, 18, data[:50])
    with pytest.raises(ImageError, match="step 14 is shorter than a row"):
        image_from_msg_fields("rgb8", 3, 5, 14, data)
    with pytest.raises(ImageError, match="no pixels"):
        image_from_msg_fields("rgb8", 0, 5, 18, b"")


@pytest.mark.parametrize("encoding", ["16UC1", "yuv422", "bayer_rggb8", "RGB8", "32FC1"])
def test_unknown_encodings_are_refused_by_name(encoding):
    with pytest.raises(ImageError) as caught:
        image_from_msg_fields(encoding, 3, 5, 30, bytes(90))
    message = str(caught.value)
    assert "\n" not in message and repr(encoding) in message and "rgb8" in message


def test_compressed_png_round_trip_is_exact_and_jpeg_is_close():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    rgb[:, :16] = (200, 40, 90)  # a flat half, for JPEG to keep
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    png = cv2.imencode(".png", bgr)[1].tobytes()
    assert np.array_equal(image_from_compressed("png", png), rgb)
    assert np.array_equal(image_from_compressed("rgb8; png compressed bgr8",
                                                array.array("B", png)), rgb)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    got = image_from_compressed("jpeg", jpeg)
    assert got.shape == rgb.shape
    assert np.abs(got[4:-4, 2:12].astype(int) - (200, 40, 90)).max() <= 8
    with pytest.raises(ImageError, match="not a PNG, JPEG"):
        image_from_compressed("jpeg", b"not an image at all")
    with pytest.raises(ImageError, match="no data"):
        image_from_compressed("png", b"")
    with pytest.raises(ImageError, match="depth image"):
        image_from_compressed("16UC1; compressedDepth", png)


def test_a_compressed_header_claiming_too_many_pixels_is_refused_before_decoding():
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    huge = bytearray(png)
    huge[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR w, h
    with pytest.raises(ImageError, match="MP limit"):
        image_from_compressed("png", bytes(huge))


def test_mask_to_mono8_fields():
    mask = np.zeros((3, 5), dtype=bool)
    mask[1, 1:4] = True
    mask[2, 4] = True
    encoding, height, width, step, data = mask_to_mono8_fields(mask)
    assert (encoding, height, width, step) == ("mono8", 3, 5, 5)
    assert data == bytes([0] * 5 + [0, 255, 255, 255, 0] + [0, 0, 0, 0, 255])
    assert mask_to_mono8_fields(mask.astype(np.uint8))[4] == data
    with pytest.raises(ImageError, match="H×W"):
        mask_to_mono8_fields(np.zeros((2, 3, 5), bool))


def test_detections_from_a_hand_made_record():
    record = {"text": "the red mug", "index": 3, "score": 0.8125, "box": [10, 20, 14, 30]}
    empty = {"text": "nothing", "index": 0, "score": -0.5, "box": [0, 0, 0, 0]}
    assert detections_from_results([record, empty]) == [
        {"center_x": 11.5, "center_y": 24.5, "size_x": 4.0, "size_y": 10.0,
         "class_id": "the red mug", "score": 0.8125, "id": "3"},
        {"center_x": 0.0, "center_y": 0.0, "size_x": 0.0, "size_y": 0.0,
         "class_id": "nothing", "score": -0.5, "id": "0"}]
    assert detections_from_results([]) == []


def test_expressions_from_text():
    assert expressions_from_text("  the red mug \n") == ["the red mug"]
    assert expressions_from_text('["the red mug", " the laptop"]') == ["the red mug",
                                                                       "the laptop"]
    for bad in ("", "   ", "[1, 2]", "[", '["ok", ""]', "[]"):
        with pytest.raises(TextError):
            expressions_from_text(bad)


# ------------------------------------------------------------------ the frame logic


@pytest.fixture(scope="module")
def scene_image():
    from zsris_rt.image import read_image

    return read_image(EXAMPLES / "scene-1.png")


@pytest.fixture
def core(demo_segmenter):
    core = ServiceCore(demo_segmenter, ServiceConfig(workers=1, max_queue=2))
    yield core
    core.close()


class Spy:
    def __init__(self, core: ServiceCore) -> None:
        self.calls = 0
        self._encode = core.encode

        def encode(*args, **kwargs):
            self.calls += 1
            return self._encode(*args, **kwargs)

        core.encode = encode  # type: ignore[method-assign]


def test_expressions_about_one_frame_encode_it_once_and_match_the_segmenter(
        core, demo_segmenter, scene_image):
    spy = Spy(core)
    frames = FrameSegmenter(core)
    with pytest.raises(NoFrame):
        frames.submit(["the green circle"])
    frames.new_frame(scene_image, stamp="t1", frame_id="camera")
    texts = ["the green circle", "the yellow square", "the red star"]
    first = frames.answer(texts[:2], timeout_s=120)
    second = frames.submit(texts[2:])
    assert second is not None
    second_answer = second.result(timeout=120)
    assert spy.calls == 1 and frames.encodes == 1 and core.scenes.stats()[0] == 1
    assert first.encoded and not second_answer.encoded
    assert first.scene_id == second_answer.scene_id and first.stamp == "t1"

    scene = demo_segmenter.encode_image(scene_image)
    records = first.results + second_answer.results
    for text, record in zip(texts, records, strict=True):
        direct = demo_segmenter.query(scene, text)
        assert record["text"] == text and record["index"] == direct.index
        assert np.array_equal(from_coco_rle(record["rle"]), direct.mask)

    # The node's outputs.
    encoding, height, width, step, data = first.mask_fields()
    assert (encoding, height, width, step) == ("mono8", 240, 320, 320)
    direct = demo_segmenter.query(scene, texts[0])
    assert data == mask_to_mono8_fields(direct.mask)[4]
    detections = first.detections()
    assert [d["class_id"] for d in detections] == texts[:2]
    x0, y0, x1, y1 = direct.box
    assert detections[0]["size_x"] == x1 - x0 and detections[0]["size_y"] == y1 - y0
    assert detections[0]["score"] == pytest.approx(direct.score)
    payload = json.loads(first.to_json())
    assert payload["scene_id"] == first.scene_id and payload["frame_id"] == "camera"
    assert [r["index"] for r in payload["results"]] == [r["index"] for r in first.results]


def test_a_new_frame_is_encoded_again_and_the_old_scene_dropped(core, scene_image):
    spy = Spy(core)
    frames = FrameSegmenter(core)
    frames.new_frame(scene_image, stamp=1)
    old = frames.answer(["the green circle"], timeout_s=120)
    frames.new_frame(np.ascontiguousarray(scene_image[:, ::-1]), stamp=2)
    assert core.scenes.stats()[0] == 0  # dropped at once: no worker was on it
    assert spy.calls == 1  # nothing encoded before an expression is asked
    new = frames.answer(["the green circle"], timeout_s=120)
    again = frames.answer(["the yellow square"], timeout_s=120)
    assert spy.calls == 2 and new.encoded and not again.encoded
    assert new.scene_id != old.scene_id and new.stamp == 2 and new.serial == 2
    assert core.scenes.stats()[0] == 1


def test_a_bad_expression_is_refused_before_the_frame_is_encoded(core, scene_image):
    spy = Spy(core)
    frames = FrameSegmenter(core)
    frames.new_frame(scene_image)
    with pytest.raises(TextError):
        frames.answer([""], timeout_s=60)
    with pytest.raises(TextError):
        frames.answer([], timeout_s=60)
    assert spy.calls == 0
    with pytest.raises(ZsrisError, match="RGB uint8"):
        frames.new_frame(scene_image[..., 0])


def test_busy_drops_the_request_and_never_blocks(demo_segmenter, scene_image):
    core = ServiceCore(demo_segmenter, ServiceConfig(workers=1, max_queue=0))
    release = threading.Event()
    try:
        blocker = core.submit(lambda: release.wait(60))
        frames = FrameSegmenter(core)
        frames.new_frame(scene_image)
        assert frames.submit(["the green circle"]) is None
        assert frames.dropped == 1
        with pytest.raises(Busy):
            frames.answer(["the green circle"], timeout_s=60)
        release.set()
        blocker.result(timeout=60)
        done = threading.Event()
        future = frames.submit(["the green circle"], done=lambda f: done.set())
        assert future is not None and done.wait(120)
        assert future.result().results[0]["text"] == "the green circle"
    finally:
        release.set()
        core.close()


def test_an_answer_that_takes_too_long_is_a_timeout(core, scene_image):
    release = threading.Event()
    blocker = core.submit(lambda: release.wait(60))
    frames = FrameSegmenter(core)
    frames.new_frame(scene_image)
    try:
        with pytest.raises(ZsrisError, match="no answer within 0.05 s"):
            frames.answer(["the green circle"], timeout_s=0.05)
    finally:
        release.set()
        blocker.result(timeout=60)


# ------------------------------------------------------------------ the node without ROS


def test_the_node_without_rclpy_exits_2_with_one_line(monkeypatch, capsys):
    from zsris_rt.ros2 import node

    monkeypatch.setitem(sys.modules, "rclpy", None)  # not importable, even where ROS is
    assert node.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("zsris-rt-ros2: error: needs ROS 2 (rclpy")
    assert "source /opt/ros/" in lines[0]


def test_the_node_class_over_stand_in_ros_modules(demo_segmenter, scene_image, monkeypatch):
    """node.make_node with plain stand-ins for rclpy's Node and the message classes: the
    callbacks, the publishing and the service callback, everything but ROS itself."""
    from zsris_rt.ros2 import node as ros_node
    from zsris_rt.segmenter import Segmenter

    class Msg:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    class Pub:
        def __init__(self):
            self.msgs = []
            self.got = threading.Semaphore(0)

        def publish(self, msg):
            self.msgs.append(msg)
            self.got.release()

    class Logger:
        def __init__(self):
            self.lines = []

        def info(self, text, **_):
            self.lines.append(text)

        warning = error = info

    class Node:
        def __init__(self, name):
            self.subs, self.pubs, self.logger = {}, {}, Logger()

        def declare_parameter(self, name, default):
            return Msg(value=["the green circle"] if name == "expressions" else default)

        def create_publisher(self, kind, topic, depth):
            return self.pubs.setdefault(topic, Pub())

        def create_subscription(self, kind, topic, callback, qos, callback_group=None):
            self.subs[topic] = callback

        def get_logger(self):
            return self.logger

    def detection():
        return Msg(header=None, id="", results=[],
                   bbox=Msg(center=Msg(position=Msg(x=0.0, y=0.0)), size_x=0.0, size_y=0.0))

    ros = {"Node": Node, "Parameter": Msg(Type=Msg(STRING_ARRAY=None)), "Image": Msg,
           "CompressedImage": Msg, "String": Msg, "Header": Msg, "Detection2D": detection,
           "Detection2DArray": lambda: Msg(header=None, detections=[]),
           "ObjectHypothesisWithPose": lambda: Msg(hypothesis=Msg(class_id="", score=0.0)),
           "MutuallyExclusiveCallbackGroup": lambda: None,
           "ReentrantCallbackGroup": lambda: None, "qos_profile_sensor_data": None}
    monkeypatch.setattr(ros_node, "_segment_srv", lambda: None)
    monkeypatch.setattr(Segmenter, "from_pack", classmethod(lambda cls, *a, **k: demo_segmenter))
    node = ros_node.make_node(ros)
    try:
        assert any("~/segment off" in line for line in node.logger.lines)
        bgr = np.ascontiguousarray(scene_image[..., ::-1])
        image = Msg(encoding="bgr8", height=240, width=320, step=960, is_bigendian=0,
                    data=array.array("B", bgr.tobytes()),
                    header=Msg(stamp="T1", frame_id="camera"))
        node.subs["image"](image)  # the standing expression is asked of it
        node.subs["~/expression"](Msg(data='["the yellow square"]'))
        for topic in ("~/mask", "~/detections", "~/result"):
            for _ in range(2):
                assert node.pubs[topic].got.acquire(timeout=120), topic
        assert node.frames.encodes == 1
        masks = node.pubs["~/mask"].msgs
        assert {(m.encoding, m.height, m.width, m.step, len(m.data)) for m in masks} == \
            {("mono8", 240, 320, 320, 240 * 320)}
        assert masks[0].header.stamp == "T1" and masks[0].header.frame_id == "camera"
        texts = sorted(d.results[0].hypothesis.class_id
                       for a in node.pubs["~/detections"].msgs for d in a.detections)
        assert texts == ["the green circle", "the yellow square"]
        response = node.on_segment(Msg(expressions=["the green circle"]), Msg())
        assert response.success and response.message == ""
        assert json.loads(response.json)["results"][0]["text"] == "the green circle"
        response = node.on_segment(Msg(expressions=[""]), Msg())
        assert not response.success and "empty" in response.message
        node.subs["image"](Msg(encoding="16UC1", height=2, width=2, step=4, is_bigendian=0,
                               data=bytes(8), header=Msg(stamp="T2", frame_id="camera")))
        assert any("image dropped" in line and "16UC1" in line for line in node.logger.lines)
    finally:
        node.close()
