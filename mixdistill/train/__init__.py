"""Student training: multi-task LoRA fine-tuning on a mixed CoT/PoT corpus (transformers + peft).

`data` turns a corpus version into token ids with the loss masked to the rationale, `model` loads the base model with
its LoRA adapter, `trainer` holds the per-mode weighted loss, `run` ties them together and writes the registry
records, `bench` measures training throughput, `publish` pushes an adapter with its model card.
"""
