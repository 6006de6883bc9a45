"""Launch the zsris-rt ROS 2 node (`zsris-rt-ros2`, installed by `pip install -e .` in the
environment ROS 2 runs in): `ros2 launch ros2/launch/zsris_rt.launch.py image_topic:=/camera/
image_raw expressions:='["the red mug"]'`. Every argument is a node parameter (see
zsris_rt/ros2/node.py); `expressions` is a JSON list of strings (default: none standing)."""

import json

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {  # name → (default, description)
    "pack": ("", "model pack folder; empty: $ZSRIS_PACK, else the demo pack"),
    "backend": ("cpu", "cpu, cuda, ort-trt, trt or auto"),
    "precision": ("fp32", "fp32, fp16 or int8"),
    "proposer_mode": ("exact", "exact or fast"),
    "image_topic": ("image", "the sensor_msgs/Image (or CompressedImage) topic"),
    "compressed": ("false", "true: subscribe to sensor_msgs/CompressedImage"),
    "expressions": ("[]", "JSON list of expressions asked of every frame"),
    "threads": ("0", "ONNX Runtime threads; 0: its default"),
    "workers": ("1", "inference threads"),
    "max_queue": ("1", "requests waiting for a worker; more are dropped"),
    "service_timeout_s": ("30.0", "how long ~/segment waits for its answer"),
}


def _node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    parameters = {
        "pack": value["pack"],
        "backend": value["backend"],
        "precision": value["precision"],
        "proposer_mode": value["proposer_mode"],
        "image_topic": value["image_topic"],
        "compressed": value["compressed"].strip().lower() in ("true", "1", "yes"),
        "threads": int(value["threads"]),
        "workers": int(value["workers"]),
        "max_queue": int(value["max_queue"]),
        "service_timeout_s": float(value["service_timeout_s"]),
    }
    expressions = json.loads(value["expressions"] or "[]")
    if expressions:  # an empty list has no type a parameter could take
        parameters["expressions"] = [str(e) for e in expressions]
    # No `package`: the executable is the console script on PATH (pip), not an ament package's.
    return [Node(executable="zsris-rt-ros2", name="zsris_rt", output="screen",
                 parameters=[parameters])]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)])
