import re
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "koda" / "model"


def test_model_package_does_not_import_distribution():
    offenders = []
    for path in MODEL.glob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(import|from)\s+(deepspeed|torch\.distributed)", line):
                offenders.append(f"{path.name}: {line.strip()}")
    assert offenders == []
