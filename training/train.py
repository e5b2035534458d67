"""Fine-tune a token-classification model from a config: setup -> train -> evaluate -> save.

``train`` reads as those four steps; each is a function of its own config section. The run
writes into a work directory beside the output and moves the finished model into place at the
end, so a failed or killed run never replaces the previous good model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset, DatasetDict
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorForTokenClassification,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from training.config import Config, DataConfig, ModelConfig, TrainingConfig
from training.data.dataset import build_from_config, label_counts
from training.errors import TrainingError
from training.evaluation.model_card import render_model_card
from training.evaluation.scores import evaluate_tagger, format_scores, seqeval_scores
from training.files import apply_umask, move_into_place, sha256_of_files
from training.inference.quantization import calibrate
from training.inference.tagger import Tagger
from training.labelstudio.client import resolve_source
from training.modeling.encoder import build_model, load_tokenizer, resolve_model
from training.modeling.hardware import bf16_supported
from training.modeling.windows import Windows, encode_documents, owned_predictions
from training.schema import BIO_TAGS, HELD_OUT_SPLITS, ID2LABEL
from training.text import BioConstraints, decode, line_starts, word_probabilities


@dataclass
class TrainResult:
    """Where the model went and the scores it reached."""

    output_dir: Path
    metrics: dict


def work_dir_for(output_dir: Path) -> Path:
    """The run's scratch directory (checkpoints, the model before it is moved into place)."""
    return output_dir.parent / f".{output_dir.name}.run"


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


class DocumentOrderTrainer(Trainer):
    """``Trainer`` that evaluates windows in dataset order.

    With ``train_sampling_strategy="group_by_length"`` transformers also length-groups the
    evaluation sampler, which shuffles windows; ``compute_metrics`` maps predictions back to
    documents by window position, so evaluation must stay sequential.
    """

    def _get_eval_sampler(self, eval_dataset):
        if self.args.world_size <= 1:
            return SequentialSampler(eval_dataset)
        return None


def split_windows(rows, tokenizer, model_config, owned_only: bool):
    """The labelled windows of a dataset split (``owned_only``: each word labelled once, for evaluation)."""
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
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def document_metrics_fn(windows, gold_rows, decoding: str = "viterbi"):
    """``compute_metrics`` for the Trainer: document-level seqeval from owned-word predictions,
    decoded as ``Tagger`` decodes them (``preprocess_logits_for_metrics`` gives probabilities)."""
    gold = [[BIO_TAGS[i] for i in row["ner_tags"]] for row in gold_rows]
    breaks = [line_starts(row["text"], row["token_spans"]) for row in gold_rows]
    constraints = BioConstraints(BIO_TAGS)

    def compute(prediction) -> dict:
        # Distributed evaluation pads uneven shards with repeats; they must be dropped again.
        if len(prediction.predictions) != len(windows):
            raise RuntimeError(f"{len(prediction.predictions)} predicted windows for {len(windows)}")
        per_doc = owned_predictions(windows, prediction.predictions, [len(g) for g in gold])
        predicted = []
        for rows, row, line_start in zip(per_doc, gold_rows, breaks):
            tagged = decode(
                word_probabilities(rows, BIO_TAGS),
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

    Small projects (and a refit, ``data.split.refit``) have no validation documents: model
    selection then falls back to the training documents, and without test documents the final
    scores come from the selection split (``plan_notes`` says so; those scores are not held-out).
    """
    selection = "validation" if "validation" in dataset else "train"
    return selection, "test" if "test" in dataset else selection


def plan_notes(dataset, selection: str, final_split: str, refit: bool = False) -> list[str]:
    """What ``train`` tells the user about the splits it uses."""
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.items())
    notes = [f"documents per split: {sizes}"]
    if refit:
        notes.append("refit: the validation documents are trained on; the last epoch is kept")
    elif selection != "validation":
        notes.append("no validation documents: the best checkpoint is chosen on the training documents")
    if final_split != "test":
        notes.append(f"no test documents: final scores come from the {final_split} split (not held-out)")
    return notes


def last_complete_checkpoint(folder: Path, remove_incomplete: bool = False) -> str | None:
    """The newest checkpoint in ``folder`` that was saved whole (None: none).

    ``Trainer`` writes ``trainer_state.json`` last, so a run killed while saving leaves a newer
    checkpoint without it, which ``get_last_checkpoint`` would pick and ``train`` then refuse.
    With ``remove_incomplete`` such leftovers are removed (the trainer saves that step again).
    """
    steps = [
        (int(path.name.rpartition("-")[2]), path)
        for path in (folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else [])
        if path.is_dir() and path.name.rpartition("-")[2].isdigit()
    ]
    for _, path in sorted(steps, reverse=True):
        if (path / TRAINER_STATE_NAME).is_file():
            return str(path)
        if remove_incomplete:
            shutil.rmtree(path)
    return None


def train(config: Config, resume: bool = False) -> TrainResult:
    """Train, evaluate on validation, test and held-out splits, and save the model directory."""
    # Setup: fail early on the output location and the encoder, then join the process group.
    output_dir = Path(config.training.output_dir)
    model_path = resolve_model(config.model.name)
    check_output_writable(output_dir, model_path)
    work_dir = work_dir_for(output_dir)
    args = training_arguments(config.training, work_dir, select_best=not config.data.split.refit)
    is_main = args.process_index == 0
    # The tokenizer loads in seconds and proves the model resolves: before any data work.
    tokenizer = load_tokenizer(model_path, config.model.case_markers)
    if is_main and work_dir.exists() and not resume:
        shutil.rmtree(work_dir)
    data, dataset = prepare_data(config.data, is_main)
    config = config.model_copy(update={"data": data})

    # Train
    trainer, train_windows = build_trainer(
        config.model, model_path, tokenizer, dataset, args, config.training.early_stopping_patience
    )
    checkpoints = work_dir / "checkpoints"
    checkpoint = last_complete_checkpoint(checkpoints, remove_incomplete=is_main) if resume else None
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    if not is_main:
        return TrainResult(output_dir=output_dir, metrics={})

    # Evaluate the best model on whole documents (rank 0: every document exactly once)
    metrics = evaluate_model(config.model, trainer.model, tokenizer, dataset, config.training.eval_batch_size)
    metrics["train"] = {
        "runtime_s": train_output.metrics.get("train_runtime"),
        "steps": train_output.global_step,
        "loss": train_output.training_loss,
        "windows": len(train_windows),
        "bf16": args.bf16,
        "world_size": args.world_size,
    }
    for name in ("test", *HELD_OUT_SPLITS):
        if name in metrics:
            print(format_scores(metrics[name], title=f"{name} split ({config.name})"))

    # Save into the work dir, then move into place
    final = work_dir / "final"
    save_model(config, trainer, tokenizer, train_windows, metrics, dataset, final)
    move_into_place(final, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(output_dir=output_dir, metrics=metrics)


def training_arguments(t: TrainingConfig, work_dir: Path, select_best: bool = True) -> TrainingArguments:
    """The Trainer's arguments; seeds everything. Under torchrun they join the process group
    (gloo on CPU, NCCL on GPU), so they come before any data work. Without ``select_best`` (a
    refit) nothing is evaluated during training and the last epoch is kept."""
    set_seed(t.seed)
    cuda = torch.cuda.is_available()
    return TrainingArguments(
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
        bf16=t.bf16 is True or (t.bf16 == "auto" and bf16_supported()),
        use_cpu=not cuda,
        # torchrun sets WORLD_SIZE; a backend given outside a distributed launch breaks accelerate.
        ddp_backend=("nccl" if cuda else "gloo") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        # Per-rank mean loss, gradients averaged by DDP: losses read the same at any world size.
        average_tokens_across_devices=False,
        eval_strategy="epoch" if select_best else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=select_best,
        metric_for_best_model="f1",
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        logging_steps=t.logging_steps,
        report_to="none",
        disable_tqdm=not t.progress,
        dataloader_num_workers=0,
    )


def prepare_data(data: DataConfig, is_main: bool) -> tuple[DataConfig, DatasetDict]:
    """The data section with a file source, and its DatasetDict (every split non-empty).

    Rank 0 pulls a Label Studio source if one is configured and saves the dataset; the other
    ranks build the same dataset in memory from the source it resolved.
    """
    if is_main:
        data = resolve_source(data)
    data = _from_main_process(data)
    dataset, report = build_from_config(data, save=is_main)
    if is_main:
        print(report.summary())
        for line in plan_notes(dataset, *evaluation_plan(dataset), refit=data.split.refit):
            print(line)
    return data, dataset


def build_trainer(
    model_config: ModelConfig,
    model_path: str,
    tokenizer,
    dataset: DatasetDict,
    args: TrainingArguments,
    early_stopping_patience: int | None,
) -> tuple[Trainer, Windows]:
    """A Trainer of a fresh model on the training windows, selecting on validation F1 (or on the
    training documents when there are no validation ones); and the training windows
    (calibration reads them after training)."""
    model = build_model(model_path, BIO_TAGS, attention_dropout=model_config.attention_dropout)
    train_windows = split_windows(dataset["train"], tokenizer, model_config, owned_only=False)
    selection, _ = evaluation_plan(dataset)
    validation_windows = split_windows(dataset[selection], tokenizer, model_config, owned_only=True)
    callbacks = []
    if early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = DocumentOrderTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train_windows.as_columns()),
        eval_dataset=Dataset.from_dict(validation_windows.as_columns()),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=document_metrics_fn(
            validation_windows, list(dataset[selection]), model_config.decoding
        ),
        preprocess_logits_for_metrics=lambda logits, labels: logits.float().softmax(-1),
        callbacks=callbacks,
    )
    return trainer, train_windows


def evaluate_model(
    model_config: ModelConfig, model, tokenizer, dataset: DatasetDict, batch_size: int
) -> dict:
    """Scores of ``model`` on the validation, test and held-out splits, as ``Tagger`` reads them.

    Held-out splits (realnews) are scored, never used for training or model selection. A small
    project without validation or test documents is scored on what ``evaluation_plan`` chose.
    """
    tagger = Tagger(
        model,
        tokenizer,
        max_length=model_config.max_length,
        stride=model_config.stride,
        batch_size=batch_size,
        decoding=model_config.decoding,
    )
    selection, final_split = evaluation_plan(dataset)
    scored = {
        name: evaluate_tagger(tagger, list(dataset[name]))
        for name in dict.fromkeys([selection, final_split, *(n for n in HELD_OUT_SPLITS if n in dataset)])
    }
    return {
        "validation": scored[selection],
        "test": scored[final_split],
        **{name: scored[name] for name in HELD_OUT_SPLITS if name in scored},
        "splits_used": {"model_selection": selection, "final_scores": final_split},
    }


def save_model(
    config: Config,
    trainer: Trainer,
    tokenizer,
    train_windows: Windows,
    metrics: dict,
    dataset: DatasetDict,
    final: Path,
) -> None:
    """Write the model directory into ``final``: weights, tokenizer, activation ranges, the
    resolved config, metrics, training log and model card."""
    if final.exists():
        shutil.rmtree(final)
    trainer.model.config.id2label = dict(ID2LABEL)
    trainer.model.config.label2id = {v: k for k, v in ID2LABEL.items()}
    trainer.save_model(str(final))
    # A plain pipeline cuts articles into windows of the tokenizer's model_max_length: make it
    # the window the model was trained on (the encoder's 512 would show it unseen positions).
    tokenizer.model_max_length = config.model.max_length
    tokenizer.save_pretrained(str(final))
    calibrate(trainer.model, train_windows.input_ids, tokenizer.pad_token_id or 0, final)
    (final / "training_config.yaml").write_text(config.to_yaml())
    (final / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (final / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    counts = {split: dict(c) for split, c in label_counts(dataset).items()}
    (final / "README.md").write_text(
        render_model_card(config, metrics, counts, sha256_of_files([config.data.source]))
    )
    (final / "training_args.bin").unlink(missing_ok=True)
    # safetensors writes weights 0600; a model folder is shared like any other output.
    apply_umask(path for path in final.rglob("*") if path.is_file())
