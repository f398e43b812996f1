"""Reference values for feature capture: the intermediate tensors of tests/fixtures/torch-cnn.onnx
(a torch.onnx.export'ed CNN, used as a teacher) on the first 8 Fashion-MNIST test images,
computed in PyTorch from the ONNX file's weights (not by onnxruntime, not by Distillate), then
pooled as the cache pools them (torch's adaptive pooling). Run:

    python3 scripts/teachers/feature_reference.py > tests/fixtures/torch-cnn.features.json

Needs torch, onnx and numpy (pip), and Debian's dataset-fashion-mnist.
"""
import gzip
import json

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

MODEL = "tests/fixtures/torch-cnn.onnx"
IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
MEAN, STD = 0.286, 0.353  # tests/fixtures/torch-cnn.json's normalization
ROWS = 8

w = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).double() for t in onnx.load(MODEL).graph.initializer}
with gzip.open(IMAGES, "rb") as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:ROWS]
x = (torch.from_numpy(raw.astype(np.float64)) / 255.0 - MEAN) / STD

with torch.no_grad():
    relu = F.relu(F.conv2d(x, w["conv.weight"], w["conv.bias"], padding=1))  # /Relu_output_0 [3, 28, 28]
    pooled = F.max_pool2d(relu, 2)  # /MaxPool_output_0 [3, 14, 14]
    logits = pooled.flatten(1) @ w["fc.weight"].T + w["fc.bias"]


def rows(t):
    return t.reshape(ROWS, -1).tolist()


print(
    json.dumps(
        {
            "rows": ROWS,
            "logits": rows(logits),
            "relu_avg": rows(relu.mean(dim=(2, 3))),
            "relu_max_grid_3x3": rows(F.adaptive_max_pool2d(relu, (3, 3))),
            "relu_avg_grid_3x3": rows(F.adaptive_avg_pool2d(relu, (3, 3))),
            "maxpool": rows(pooled),
        }
    )
)
