"""Thin absl entry points over the bl_keras library (`python -m apps.<name>`)."""
