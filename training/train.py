"""Fine-tune a token-classification model from a config: dataset -> windows -> Trainer -> save.

The run writes into a work directory beside the output and moves the finished model into
place at the end, so a failed or killed run never replaces the previous good model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from training.config import Config
from training.errors import TrainingError
from training.schema import BIO_TAGS, ID2LABEL


@dataclass
class TrainResult:
    """Where the model went and the scores it reached."""

    output_dir: Path
    metrics: dict


def work_dir_for(output_dir: Path) -> Path:
    """The run's scratch directory (checkpoints, the model before it is moved into place)."""
    return output_dir.parent / f".{output_dir.name}.run"


def bf16_supported() -> bool:
    """bf16 autocast pays off: a CUDA GPU with bf16, or a CPU with AVX-512 BF16."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_writable(output_dir: Path) -> None:
    """Fail before any heavy work when the output location cannot be written."""
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{parent}: cannot create the output location: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise TrainingError(f"{parent}: output location is not writable")


def _trainer_class():
    """``Trainer`` that evaluates windows in dataset order.

    With ``train_sampling_strategy="group_by_length"`` transformers also length-groups the
    evaluation sampler, which shuffles windows; ``compute_metrics`` maps predictions back to
    documents by window position, so evaluation must stay sequential.
    """
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class DocumentOrderTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):
            if self.args.world_size <= 1:
                return SequentialSampler(eval_dataset)
            return None

    return DocumentOrderTrainer


def document_metrics_fn(windows, gold_rows):
    """``compute_metrics`` for the Trainer: document-level seqeval from owned-word predictions."""
    from training.alignment import owned_predictions
    from training.evaluate import seqeval_scores

    gold = [[BIO_TAGS[i] for i in row["ner_tags"]] for row in gold_rows]

    def compute(prediction) -> dict:
        per_doc = owned_predictions(windows, prediction.predictions, [len(g) for g in gold])
        predicted = [[BIO_TAGS[int(t)] if t is not None else "O" for t in doc] for doc in per_doc]
        strict = seqeval_scores(gold, predicted, strict=True)["micro"]
        return {"precision": strict["precision"], "recall": strict["recall"], "f1": strict["f1"]}

    return compute


def train(config: Config, resume: bool = False) -> TrainResult:
    """Train, evaluate on validation and test, and save the model directory."""
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorForTokenClassification,
        EarlyStoppingCallback,
        TrainingArguments,
        set_seed,
    )

    from training.alignment import encode_documents
    from training.dataset import build_from_config, label_counts
    from training.evaluate import evaluate_tagger, format_scores
    from training.inference import Tagger
    from training.model_card import render_model_card
    from training.modeling import build_model, load_tokenizer, resolve_model

    output_dir = Path(config.training.output_dir)
    check_output_writable(output_dir)
    work_dir = work_dir_for(output_dir)
    if work_dir.exists() and not resume:
        shutil.rmtree(work_dir)
    set_seed(config.training.seed)

    # Data
    dataset, report = build_from_config(config)
    print(report.summary())
    for split in ("train", "validation", "test"):
        if len(dataset[split]) == 0:
            raise TrainingError(f"{config.data.source}: the {split} split is empty")

    # Model
    model_path = resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_path, config.model.case_markers)
    model = build_model(model_path, BIO_TAGS)

    def windows_of(split: str, owned_only: bool):
        rows = dataset[split]
        return encode_documents(
            tokenizer,
            rows["tokens"],
            rows["ner_tags"],
            max_length=config.model.max_length,
            stride=config.model.stride,
            label_all_subwords=config.model.label_all_subwords,
            label_owned_only=owned_only,
            id2label=ID2LABEL,
        )

    train_windows = windows_of("train", owned_only=False)
    validation_windows = windows_of("validation", owned_only=True)
    validation_rows = list(dataset["validation"])

    # Trainer
    t = config.training
    use_bf16 = t.bf16 is True or (t.bf16 == "auto" and bf16_supported())
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type="linear",
        seed=t.seed,
        data_seed=t.seed,
        bf16=use_bf16,
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        logging_steps=t.logging_steps,
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_num_workers=0,
    )
    callbacks = []
    if t.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train_windows.as_columns()),
        eval_dataset=Dataset.from_dict(validation_windows.as_columns()),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=document_metrics_fn(validation_windows, validation_rows),
        preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1),
        callbacks=callbacks,
    )
    checkpoint = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(work_dir / "checkpoints"))
    train_output = trainer.train(resume_from_checkpoint=checkpoint)

    # Evaluate the best model on whole documents
    tagger = Tagger(
        trainer.model,
        tokenizer,
        max_length=config.model.max_length,
        stride=config.model.stride,
        batch_size=t.eval_batch_size,
    )
    metrics = {
        "validation": evaluate_tagger(tagger, validation_rows),
        "test": evaluate_tagger(tagger, list(dataset["test"])),
        "train": {
            "runtime_s": train_output.metrics.get("train_runtime"),
            "steps": train_output.global_step,
            "loss": train_output.training_loss,
            "windows": len(train_windows),
            "bf16": use_bf16,
        },
    }
    print(format_scores(metrics["test"], title=f"test split ({config.name})"))

    # Save into the work dir, then move into place
    final = work_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    trainer.model.config.id2label = dict(ID2LABEL)
    trainer.model.config.label2id = {v: k for k, v in ID2LABEL.items()}
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "training_config.yaml").write_text(config.to_yaml())
    (final / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (final / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    counts = {split: dict(c) for split, c in label_counts(dataset).items()}
    (final / "README.md").write_text(
        render_model_card(config, metrics, counts, _sha256(Path(config.data.source)))
    )
    for leftover in ("training_args.bin",):
        (final / leftover).unlink(missing_ok=True)
    _move_into_place(final, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(output_dir=output_dir, metrics=metrics)


def _move_into_place(source: Path, destination: Path) -> None:
    backup = destination.with_name(f".{destination.name}.previous")
    if backup.exists():
        shutil.rmtree(backup)
    if destination.exists():
        os.replace(destination, backup)
    os.replace(source, destination)
    if backup.exists():
        shutil.rmtree(backup)
