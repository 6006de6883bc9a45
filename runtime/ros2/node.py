"""`zsris-rt-ros2`: the ROS 2 node, a thin adapter over the service core (zsris_rt.service.core)
and the frame logic (zsris_rt.ros2.frames); the conversions live in zsris_rt.ros2.conversions.

rclpy and the message packages are imported inside `main`, so that this module imports without
ROS; `main` then says on one line what to install or source, and exits 2.

Parameters: `pack` ("" = $ZSRIS_PACK, else the demo pack), `backend` (cpu), `precision` (fp32),
`proposer_mode` (exact), `threads` (0 = ONNX Runtime's default), `workers` (1), `max_queue` (1),
`image_topic` (image), `compressed` (false: sensor_msgs/Image; true: CompressedImage),
`expressions` (string array: standing expressions asked of every frame), `service_timeout_s`
(30.0).

Subscribes to `image_topic`, and to `~/expression` (std_msgs/String: one expression or a JSON
list, asked of the latest frame). Publishes `~/mask` (sensor_msgs/Image mono8: the first
expression's mask), `~/detections` (vision_msgs/Detection2DArray: box, score, expression) and
`~/result` (std_msgs/String: the JSON records, as `zsris-rt --json`). The service `~/segment`
(zsris_rt_interfaces/srv/Segment, built from ros2/zsris_rt_interfaces in this repository) is
offered when that package is importable. Written for ROS 2 Humble or later; never run here.
"""

from __future__ import annotations

import array
import sys
from typing import Any

from ..commands.exit_codes import run_command
from ..errors import ZsrisError

PROG = "zsris-rt-ros2"
NEEDS = ("needs ROS 2 (rclpy, sensor_msgs, std_msgs, vision_msgs): source your ROS 2 install "
         "(source /opt/ros/$ROS_DISTRO/setup.bash) and apt install ros-$ROS_DISTRO-vision-msgs")


def _ros() -> dict[str, Any]:
    """rclpy and the message types, or ZsrisError naming what is missing."""
    try:
        import rclpy
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Header, String
        from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name else ""
        raise ZsrisError(f"{NEEDS}{missing}") from None
    return {"rclpy": rclpy, "MutuallyExclusiveCallbackGroup": MutuallyExclusiveCallbackGroup,
            "ReentrantCallbackGroup": ReentrantCallbackGroup,
            "MultiThreadedExecutor": MultiThreadedExecutor, "Node": Node,
            "Parameter": Parameter, "qos_profile_sensor_data": qos_profile_sensor_data,
            "CompressedImage": CompressedImage, "Image": Image, "Header": Header,
            "String": String, "Detection2D": Detection2D, "Detection2DArray": Detection2DArray,
            "ObjectHypothesisWithPose": ObjectHypothesisWithPose}


def _segment_srv() -> Any:
    try:
        from zsris_rt_interfaces.srv import Segment
    except ImportError:
        return None
    return Segment


def make_node(ros: dict[str, Any]) -> Any:
    """The node class over the imported ROS modules `ros` (from `_ros`), instantiated."""
    from ..segmenter import Segmenter
    from ..service.core import ServiceConfig, ServiceCore
    from .conversions import expressions_from_text, image_from_compressed, image_from_msg_fields
    from .frames import Answer, FrameSegmenter, NoFrame

    Node, Parameter = ros["Node"], ros["Parameter"]
    Image, CompressedImage, String = ros["Image"], ros["CompressedImage"], ros["String"]
    Header = ros["Header"]
    Detection2D, Detection2DArray = ros["Detection2D"], ros["Detection2DArray"]
    Hypothesis = ros["ObjectHypothesisWithPose"]

    class ZsrisNode(Node):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__("zsris_rt")
            p = self.declare_parameter
            pack = p("pack", "").value
            backend = p("backend", "cpu").value
            precision = p("precision", "fp32").value
            proposer_mode = p("proposer_mode", "exact").value
            threads = p("threads", 0).value
            workers = p("workers", 1).value
            max_queue = p("max_queue", 1).value
            image_topic = p("image_topic", "image").value
            compressed = p("compressed", False).value
            self.standing = list(p("expressions", Parameter.Type.STRING_ARRAY).value or [])
            self.timeout_s = float(p("service_timeout_s", 30.0).value)

            segmenter = Segmenter.from_pack(pack or None, backend=backend, precision=precision,
                                            proposer_mode=proposer_mode,
                                            threads=threads or None)
            # Few scenes: only the latest frame's is ever queried.
            self.core = ServiceCore(segmenter, ServiceConfig(workers=workers,
                                                             max_queue=max_queue,
                                                             max_scenes=4))
            self.frames = FrameSegmenter(self.core)
            self.compressed = bool(compressed)

            self.mask_pub = self.create_publisher(Image, "~/mask", 10)
            self.detections_pub = self.create_publisher(Detection2DArray, "~/detections", 10)
            self.result_pub = self.create_publisher(String, "~/result", 10)
            topics = ros["MutuallyExclusiveCallbackGroup"]()
            self.create_subscription(CompressedImage if self.compressed else Image, image_topic,
                                     self.on_image, ros["qos_profile_sensor_data"],
                                     callback_group=topics)
            self.create_subscription(String, "~/expression", self.on_expression, 10,
                                     callback_group=topics)
            segment_srv = _segment_srv()
            if segment_srv is None:
                self.get_logger().info(
                    "service ~/segment off: zsris_rt_interfaces is not importable (build "
                    "ros2/zsris_rt_interfaces with colcon and source its install); the "
                    "topics work without it")
            else:
                self.create_service(segment_srv, "~/segment", self.on_segment,
                                    callback_group=ros["ReentrantCallbackGroup"]())
            self.get_logger().info(
                f"{segmenter.pack.root} on {segmenter.backend.name}; images from "
                f"{image_topic} ({'compressed' if self.compressed else 'raw'}); standing "
                f"expressions: {self.standing or 'none'}")

        # ------------------------------------------------------------ callbacks

        def on_image(self, msg: Any) -> None:
            try:
                if self.compressed:
                    rgb = image_from_compressed(msg.format, msg.data)
                else:
                    rgb = image_from_msg_fields(msg.encoding, msg.height, msg.width, msg.step,
                                                msg.data, msg.is_bigendian)
            except ZsrisError as exc:
                self.get_logger().warning(f"image dropped: {exc}", throttle_duration_sec=5.0)
                return
            self.frames.new_frame(rgb, msg.header.stamp, msg.header.frame_id)
            if self.standing:
                self.ask(self.standing)

        def on_expression(self, msg: Any) -> None:
            try:
                self.ask(expressions_from_text(msg.data))
            except ZsrisError as exc:
                self.get_logger().warning(f"expression dropped: {exc}")

        def ask(self, texts: list[str]) -> None:
            """Queue `texts` about the latest frame; the answer is published when it comes."""
            try:
                future = self.frames.submit(texts, done=self.on_done)
            except NoFrame:
                self.get_logger().warning("expression dropped: no image received yet",
                                          throttle_duration_sec=5.0)
                return
            if future is None:
                self.get_logger().warning("busy: request dropped (raise max_queue or workers)",
                                          throttle_duration_sec=5.0)

        def on_done(self, future: Any) -> None:  # on a worker thread
            exc = future.exception()
            if exc is not None:
                self.get_logger().error(f"segmentation failed: {exc}")
                return
            self.publish(future.result())

        def on_segment(self, request: Any, response: Any) -> Any:
            try:
                answer = self.frames.answer(list(request.expressions), self.timeout_s)
            except ZsrisError as exc:  # Busy, NoFrame, a bad expression, the timeout
                response.success, response.message, response.json = False, str(exc), ""
                return response
            self.publish(answer)
            response.success, response.message, response.json = True, "", answer.to_json()
            return response

        # ------------------------------------------------------------ outputs

        def publish(self, answer: Answer) -> None:
            header = Header()
            header.stamp = answer.stamp
            header.frame_id = answer.frame_id
            if answer.results:
                mask = Image()
                mask.header = header
                mask.encoding, mask.height, mask.width, mask.step, data = answer.mask_fields()
                mask.is_bigendian = 0
                mask.data = array.array("B", data)
                self.mask_pub.publish(mask)
            detections = Detection2DArray()
            detections.header = header
            for fields in answer.detections():
                detections.detections.append(self.detection(header, fields))
            self.detections_pub.publish(detections)
            self.result_pub.publish(String(data=answer.to_json()))

        @staticmethod
        def detection(header: Any, fields: dict[str, Any]) -> Any:
            det = Detection2D()
            det.header = header
            if hasattr(det, "id"):
                det.id = fields["id"]
            center = det.bbox.center
            where = center.position if hasattr(center, "position") else center  # Humble+ / older
            where.x, where.y = fields["center_x"], fields["center_y"]
            det.bbox.size_x, det.bbox.size_y = fields["size_x"], fields["size_y"]
            hypothesis = Hypothesis()
            hypothesis.hypothesis.class_id = fields["class_id"]
            hypothesis.hypothesis.score = fields["score"]
            det.results.append(hypothesis)
            return det

        def close(self) -> None:
            self.core.close()

    return ZsrisNode()


def run(argv: list[str]) -> int:
    ros = _ros()
    rclpy = ros["rclpy"]
    rclpy.init(args=[PROG, *argv])
    node = None
    try:
        node = make_node(ros)
        executor = ros["MultiThreadedExecutor"](num_threads=3)
        executor.add_node(node)
        executor.spin()
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`zsris-rt-ros2 [--ros-args ...]`: 0 on a clean stop, 2 without ROS or on bad parameters
    (one line on stderr), 130 on Ctrl-C."""
    args = sys.argv[1:] if argv is None else list(argv)
    return run_command(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
