"""The warm service (`zsris-rt serve`): one loaded Segmenter shared by a bounded pool of workers,
scenes kept between requests. `core.py` is framework-free (the HTTP app in `app.py` and the ROS 2
node both sit on it); `scenes.py` holds the scene store, `metrics.py` what /metrics reports."""
