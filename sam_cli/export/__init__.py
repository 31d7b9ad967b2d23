"""Exports of a loaded model to other runtimes (ONNX), each imported only by the command that
writes it."""
