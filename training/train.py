"""Fine-tune a token-classification model from a config: dataset -> windows -> Trainer -> save.

The run writes into a work directory beside the output and moves the finished model into
place at the end, so a failed or killed run never replaces the previous good model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from training.config import Config
from training.errors import TrainingError
from training.files import apply_umask, sha256_of_files
from training.schema import BIO_TAGS, HELD_OUT_SPLITS, ID2LABEL


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


def check_output_writable(output_dir: Path, model_path: str | None = None) -> None:
    """Fail before any heavy work when the output location cannot be written or is too full.

    A run keeps up to two checkpoints (weights and optimizer state, about 3x the weights
    each) and the final model, so it needs roughly 8x the encoder's weights.
    """
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"{parent}: cannot create the output location: {exc.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise TrainingError(f"{parent}: output location is not writable")
    if model_path and Path(model_path).is_dir():
        weights = sum(f.stat().st_size for f in Path(model_path).glob("*.safetensors"))
        needed = 8 * weights
        free = shutil.disk_usage(parent).free
        if free < needed:
            raise TrainingError(
                f"{parent}: {free / 1e6:.0f} MB free, a run of this model needs about"
                f" {needed / 1e6:.0f} MB (checkpoints and the final model); free some space"
                " or set training.output_dir elsewhere"
            )


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


def split_windows(rows, tokenizer, model_config, owned_only: bool):
    """The labelled windows of a dataset split (``owned_only``: each word labelled once, for evaluation)."""
    from training.alignment import encode_documents

    return encode_documents(
        tokenizer,
        rows["tokens"],
        rows["ner_tags"],
        max_length=model_config.max_length,
        stride=model_config.stride,
        label_all_subwords=model_config.label_all_subwords,
        label_owned_only=owned_only,
        id2label=ID2LABEL,
    )


def _from_main_process(value):
    """``value`` as rank 0 has it (a no-op outside distributed runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def document_metrics_fn(windows, gold_rows, decoding: str = "viterbi"):
    """``compute_metrics`` for the Trainer: document-level seqeval from owned-word predictions,
    decoded as ``Tagger`` decodes them (``preprocess_logits_for_metrics`` gives probabilities)."""
    import numpy as np

    from training.alignment import owned_predictions
    from training.evaluate import seqeval_scores
    from training.text import BioConstraints, decode, line_starts

    gold = [[BIO_TAGS[i] for i in row["ner_tags"]] for row in gold_rows]
    breaks = [line_starts(row["text"], row["token_spans"]) for row in gold_rows]
    constraints = BioConstraints(BIO_TAGS)
    outside = np.eye(len(BIO_TAGS), dtype=np.float32)[0]

    def compute(prediction) -> dict:
        # Distributed evaluation pads uneven shards with repeats; they must be dropped again.
        if len(prediction.predictions) != len(windows):
            raise RuntimeError(f"{len(prediction.predictions)} predicted windows for {len(windows)}")
        per_doc = owned_predictions(windows, prediction.predictions, [len(g) for g in gold])
        predicted = []
        for rows, row, line_start in zip(per_doc, gold_rows, breaks):
            probabilities = np.stack([outside if p is None else p for p in rows]).astype(np.float32)
            tagged = decode(
                probabilities,
                BIO_TAGS,
                decoding=decoding,
                words=row["tokens"],
                line_start=line_start,
                constraints=constraints,
            )
            predicted.append([tag for tag, _ in tagged])
        strict = seqeval_scores(gold, predicted, strict=True)["micro"]
        return {"precision": strict["precision"], "recall": strict["recall"], "f1": strict["f1"]}

    return compute


def evaluation_plan(dataset) -> tuple[str, str]:
    """Which split selects the best checkpoint and which gives the final scores.

    Small projects may have no validation or test documents: model selection then falls back
    to the training documents and the final scores to the selection split (``plan_notes``
    says so, and the scores are not held-out).
    """
    selection = "validation" if "validation" in dataset else "train"
    return selection, "test" if "test" in dataset else selection


def plan_notes(dataset, selection: str, final_split: str) -> list[str]:
    """What ``train`` tells the user about the splits it uses."""
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.items())
    notes = [f"documents per split: {sizes}"]
    if selection != "validation":
        notes.append("no validation documents: the best checkpoint is chosen on the training documents")
    if final_split != "test":
        notes.append(f"no test documents: final scores come from the {final_split} split (not held-out)")
    return notes


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

    from training.dataset import build_from_config, label_counts, resolve_source
    from training.evaluate import evaluate_tagger, format_scores
    from training.inference import Tagger
    from training.model_card import render_model_card
    from training.modeling import build_model, load_tokenizer, resolve_model
    from training.quantization import calibrate

    output_dir = Path(config.training.output_dir)
    model_path = resolve_model(config.model.name)
    check_output_writable(output_dir, model_path)
    work_dir = work_dir_for(output_dir)
    set_seed(config.training.seed)

    # Trainer arguments first: under torchrun they join the process group (gloo on CPU, NCCL on GPU).
    t = config.training
    use_bf16 = t.bf16 is True or (t.bf16 == "auto" and bf16_supported())
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        optim="adamw_torch_fused",  # one kernel for the whole update: 67 -> 17 ms a step for MiniLM on CPU
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type="linear",
        seed=t.seed,
        data_seed=t.seed,
        bf16=use_bf16,
        use_cpu=not cuda,
        # torchrun sets WORLD_SIZE; a backend given outside a distributed launch breaks accelerate.
        ddp_backend=("nccl" if cuda else "gloo") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        # Per-rank mean loss, gradients averaged by DDP: losses read the same at any world size.
        average_tokens_across_devices=False,
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
    is_main = args.process_index == 0
    # The tokenizer loads in seconds and proves the model resolves: before any data work.
    tokenizer = load_tokenizer(model_path, config.model.case_markers)

    # Data: rank 0 clears the work dir, pulls a Label Studio source if one is configured and
    # saves the dataset; the other ranks build the same dataset in memory from what it resolved.
    if is_main:
        if work_dir.exists() and not resume:
            shutil.rmtree(work_dir)
        config = resolve_source(config)
    config = _from_main_process(config)
    dataset, report = build_from_config(config, save=is_main)
    if is_main:
        print(report.summary())
    selection, final_split = evaluation_plan(dataset)
    if is_main:
        for line in plan_notes(dataset, selection, final_split):
            print(line)

    # Model
    model = build_model(model_path, BIO_TAGS, attention_dropout=config.model.attention_dropout)

    train_windows = split_windows(dataset["train"], tokenizer, config.model, owned_only=False)
    validation_windows = split_windows(dataset[selection], tokenizer, config.model, owned_only=True)
    validation_rows = list(dataset[selection])

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
        compute_metrics=document_metrics_fn(validation_windows, validation_rows, config.model.decoding),
        preprocess_logits_for_metrics=lambda logits, labels: logits.float().softmax(-1),
        callbacks=callbacks,
    )
    checkpoint = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        checkpoint = get_last_checkpoint(str(work_dir / "checkpoints"))
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    if not is_main:
        return TrainResult(output_dir=output_dir, metrics={})

    # Evaluate the best model on whole documents (rank 0: every document exactly once)
    tagger = Tagger(
        trainer.model,
        tokenizer,
        max_length=config.model.max_length,
        stride=config.model.stride,
        batch_size=t.eval_batch_size,
        decoding=config.model.decoding,
    )
    metrics = {
        "validation": evaluate_tagger(tagger, validation_rows),
        "test": evaluate_tagger(tagger, list(dataset[final_split])),
        # Held-out splits (realnews) are scored, never used for training or model selection.
        **{name: evaluate_tagger(tagger, list(dataset[name])) for name in HELD_OUT_SPLITS if name in dataset},
        "train": {
            "runtime_s": train_output.metrics.get("train_runtime"),
            "steps": train_output.global_step,
            "loss": train_output.training_loss,
            "windows": len(train_windows),
            "bf16": use_bf16,
            "world_size": args.world_size,
        },
        "splits_used": {"model_selection": selection, "final_scores": final_split},
    }
    for name in ("test", *HELD_OUT_SPLITS):
        if name in metrics:
            print(format_scores(metrics[name], title=f"{name} split ({config.name})"))

    # Save into the work dir, then move into place
    final = work_dir / "final"
    if final.exists():
        shutil.rmtree(final)
    trainer.model.config.id2label = dict(ID2LABEL)
    trainer.model.config.label2id = {v: k for k, v in ID2LABEL.items()}
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    calibrate(trainer.model, train_windows.input_ids, tokenizer.pad_token_id or 0, final)
    (final / "training_config.yaml").write_text(config.to_yaml())
    (final / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (final / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    counts = {split: dict(c) for split, c in label_counts(dataset).items()}
    (final / "README.md").write_text(
        render_model_card(config, metrics, counts, sha256_of_files([config.data.source]))
    )
    for leftover in ("training_args.bin",):
        (final / leftover).unlink(missing_ok=True)
    # safetensors writes weights 0600; a model folder is shared like any other output.
    apply_umask(path for path in final.rglob("*") if path.is_file())
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
