"""Export a small untrained PyTorch CNN with torch.onnx.export: the test fixture
tests/fixtures/torch-cnn.onnx, a student the ORT engine must train from the file alone.

    python3 scripts/teachers/export_torch_student.py tests/fixtures/torch-cnn.onnx

Runs with Debian's python3-torch (1.13) or a pip torch 2.x (the TorchScript exporter).
"""
import sys

import torch
from torch import nn


class SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel_size=3, padding=1)
        self.fc = nn.Linear(3 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def main(out: str) -> None:
    torch.manual_seed(0)
    model = SmallCnn().eval()
    kwargs = {"dynamo": False} if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 9) else {}
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), out, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=13, **kwargs)
    print(f"{out}: torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/torch-cnn.onnx")
