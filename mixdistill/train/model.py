"""The student: a base causal LM (optionally 4-bit, QLoRA) with a LoRA adapter, and its tokenizer with a pad token."""

from __future__ import annotations

from dataclasses import dataclass

from mixdistill.recipe import LoraSettings, TrainRecipe
from mixdistill.train.data import TrainError


@dataclass(frozen=True)
class Precision:
    """What the device supports for the recipe's `precision`: the dtype weights load in and the Trainer's AMP flag."""

    name: str  # bf16 | fp16 | fp32

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.name]


def resolve_precision(setting: str) -> Precision:
    """`auto`: bf16 where the GPU supports it, else fp16 on a GPU, else fp32 (CPU). `bf16` on a CPU is bf16 autocast
    over fp32 weights, allowed where the CPU computes bf16 natively (AMX / AVX512-BF16); it is not the CPU default
    because it changes the numbers a CPU run gives."""
    import torch

    from mixdistill.cpu import cpu_has_bf16

    cuda = torch.cuda.is_available()
    bf16_ok = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
    if setting == "auto":
        return Precision("bf16" if cuda and bf16_ok else "fp16" if cuda else "fp32")
    if setting == "bf16" and not bf16_ok:
        raise TrainError("precision: bf16 needs a GPU that supports it (Ampere or newer) or a CPU with native bf16 "
                         "(AMX or AVX512-BF16); use fp16 or auto" if cuda else
                         "precision: bf16 on a CPU needs native bf16 (AMX or AVX512-BF16), which this CPU lacks; use fp32 or auto")
    if setting == "fp16" and not cuda:
        raise TrainError("precision: fp16 training needs a CUDA GPU; use fp32 or auto on CPU")
    return Precision(setting)


def load_tokenizer(recipe: TrainRecipe):
    """The student's tokenizer, with a pad token: the recipe's, else unk, else eos (labels mask padding anyway)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(recipe.student, revision=recipe.revision)
    except (OSError, ValueError) as e:
        raise TrainError(f"student: cannot load the tokenizer of {recipe.student}: {str(e).splitlines()[0]}") from None
    if recipe.pad_token is not None:
        if tok.convert_tokens_to_ids(recipe.pad_token) in (None, tok.unk_token_id) and recipe.pad_token != tok.unk_token:
            raise TrainError(f"pad_token: {recipe.pad_token!r} is not in the vocabulary of {recipe.student}")
        tok.pad_token = recipe.pad_token
    elif tok.pad_token is None:
        fallback = tok.unk_token or tok.eos_token
        if fallback is None:
            raise TrainError(f"the tokenizer of {recipe.student} has no pad, unk or eos token; set pad_token in the recipe")
        tok.pad_token = fallback
    tok.padding_side = "right"
    return tok


def load_student(recipe: TrainRecipe, tokenizer, precision: Precision):
    """Base model (4-bit when `lora.qlora`) wrapped with a fresh LoRA adapter; only the adapter trains."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs = {"revision": recipe.revision, "dtype": precision.torch_dtype}
    if recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    if recipe.lora.qlora:
        kwargs["quantization_config"] = _four_bit(precision)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = AutoModelForCausalLM.from_pretrained(recipe.student, **kwargs)
    except (OSError, ValueError) as e:
        raise TrainError(f"student: cannot load {recipe.student}: {str(e).splitlines()[0]}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    if recipe.lora.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    model = get_peft_model(model, lora_config(recipe.lora))
    if precision.name != "fp32" and not recipe.lora.qlora:
        _skip_adapter_input_cast(model)
    if recipe.compile:
        if not torch.cuda.is_available():
            raise TrainError("compile: torch.compile of the student needs a CUDA GPU here; set compile: false")
        for layer in model.get_base_model().get_decoder().layers:  # regional: one compiled graph shared by all identical layers
            layer.compile()
    return model


def _skip_adapter_input_cast(model) -> None:
    """Let autocast pick the LoRA matmul dtype instead of peft casting every adapter input to float32 first.

    The Trainer runs bf16/fp16 training under autocast, which runs those matmuls in half precision anyway; the extra
    cast is a full read and write of each activation (14% of step time for a 7B student in `bench train`).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _four_bit(precision: Precision):
    import importlib.util

    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise TrainError("lora.qlora: 4-bit loading needs a CUDA GPU; set qlora: false to train on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainError("lora.qlora: needs the bitsandbytes package (pip install bitsandbytes)")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.torch_dtype if precision.name != "fp32" else torch.float16,
    )
