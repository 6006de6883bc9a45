"""The ROS 2 node (`zsris-rt-ros2`): `conversions` (messages ↔ arrays, no rclpy), `frames` (the
latest frame encoded once through the service core for every expression; no rclpy) and `node`
(the rclpy adapter, which imports ROS only when it runs). The interface package the node's
service needs (zsris_rt_interfaces) and the launch file live under `ros2/` at the repository's
top level."""
