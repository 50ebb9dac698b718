"""Deployment: ONNX export, the onnxruntime path of ``sct predict``, and online recognition (``sct stream``).

``onnx`` and ``onnxruntime`` (the ``sct[deploy]`` extra) are imported only inside the functions that need them.
"""
