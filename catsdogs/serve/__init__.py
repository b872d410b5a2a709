"""Serving a model to people and programs: a FastAPI app speaking TensorFlow Serving's REST
dialect, dynamic batching, a static web page. Uses inference and everything below it."""
