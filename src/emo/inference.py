"""Class probabilities of a classifier in batches, with no gradients: of texts by a Hugging Face model
(`text_probabilities`), or of a data loader's batches by emo's model (`loader_probabilities`, with the examples' pooled
encoder outputs where asked)."""

import contextlib
from collections.abc import Sequence

import torch

BATCH_SIZE = 64


@torch.inference_mode()
def text_probabilities(
    model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = BATCH_SIZE, bf16: bool = False
) -> torch.Tensor:
    """One row of class probabilities (fp32) per text, in the texts' order. Batches hold texts of similar length
    (sorted by their number of tokens), each padded to its longest; `bf16`: under bf16 autocast."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    probabilities = torch.empty(len(texts), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch.to(model.device)).logits
        probabilities[rows] = logits.float().softmax(dim=-1).cpu()
    return probabilities


@torch.inference_mode()
def loader_probabilities(
    module, loader, key: str, context=contextlib.nullcontext, features: bool = False
) -> dict[str, torch.Tensor]:
    """`{key, "label", "probabilities"}` of every batch of `loader` through `module` (emo's model, in eval mode for the
    pass), in the loader's order; `key` is the batch column that says which example a row is (kept on the CPU, not an
    input). `context` wraps each forward pass (a trainer's precision: `strategy.precision_plugin.forward_context`).
    `features`: also `"features"`, each example's encoder output averaged over its tokens (padding left out), fp32,
    from the same forward pass."""
    was_training = module.training
    module.eval()
    keys, labels, probabilities, pooled = [], [], [], []
    for batch in loader:
        keys.append(batch.pop(key))
        labels.append(batch["labels"])
        inputs = {name: value.to(module.device) for name, value in batch.items()}
        with context():
            if features:
                logits, encoding = module.logits_and_encoding(inputs)
                pooled.append(mean_over_tokens(encoding, inputs.get("attention_mask")).cpu())
            else:
                logits = module(inputs)
        probabilities.append(logits.float().softmax(dim=-1).cpu())
    module.train(was_training)
    predicted = {key: torch.cat(keys), "label": torch.cat(labels), "probabilities": torch.cat(probabilities)}
    if features:
        predicted["features"] = torch.cat(pooled)
    return predicted


def mean_over_tokens(encoding: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per example (fp32): the mean of its tokens' vectors, padding left out (`attention_mask` 0)."""
    encoding = encoding.float()
    if attention_mask is None:
        return encoding.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(encoding.dtype)
    return (encoding * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
