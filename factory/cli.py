"""``factory`` command line: parse arguments, load the config, call one orchestration entry point.

Every command takes ``--config FILE`` and dotted ``key=value`` overrides after it. Errors the
user can fix (:class:`factory.errors.UserError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from pydantic import ValidationError

from factory import layout
from factory.config import FactoryConfig, load_config
from factory.errors import UserError, disk_full
from factory.runtime import use_storage_endpoint
from factory.tracking import store_unavailable

EXIT_USER_ERROR = 2
MAX_ERROR_CHARS = 500
"""The longest error line the CLI prints: a message may quote input of any size."""

Handler = Callable[[FactoryConfig, argparse.Namespace], int | None]
"""Runs one command; returns its exit code, or None for 0."""

Input = Callable[[FactoryConfig], object]
"""Resolves one input a command reads (a :mod:`factory.layout` function): ConfigError when the
config leaves it unset and has no face world to default to."""


class Command(NamedTuple):
    """One ``factory`` command: its help line, what runs it, and the inputs it reads, which
    :func:`require_inputs` resolves before any work starts."""

    help: str
    run: Handler
    reads: tuple[Input, ...] = ()


def _faceworld(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.faceworld.build import build_faceworld, print_summary

    if args.out:
        config.faceworld.out = args.out
    print_summary(build_faceworld(config))


def _baseline(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.eval.baseline import print_baseline, run_pixel_baseline

    print_baseline(run_pixel_baseline(config))


def _train_recognizer(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.train.recognizer import train_recognizer

    run = train_recognizer(config, cli_address=args.address)
    print(f"recognizer {run.run_name}: final checkpoint {run.checkpoint}")


def _train_generator(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.train.generator import train_generator

    run = train_generator(config, cli_address=args.address)
    print(f"generator {run.run_name}: final checkpoint {run.checkpoint}")


def _generator_report(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.eval.generator_report import generator_report, report_text

    print(report_text(*generator_report(config, validation=args.validation)))


def _generator_progress(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory import storage
    from factory.eval.progress import generator_progress

    rows, out = generator_progress(config, storage.absolute(args.folder) if args.folder else None)
    print(f"{len(rows)} measurements written to {out}: progress.json, progress.png")


def _evaluate(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.eval.evaluate import evaluate_checkpoint, print_evaluation

    print_evaluation(evaluate_checkpoint(config))


def _synthesize(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.synth.synthesize import synthesize

    run = synthesize(config, cli_address=args.address)
    counts = run.manifest["counts"]
    print(f"synthetic dataset {run.out}: {counts['samples']} samples, {counts['identities']} "
          f"identities, {counts['shards']} shards ({run.images_written} written now)")


def _analyze(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory import storage
    from factory.synth.analyze import analyze

    print(analyze(config, storage.absolute(args.dataset))[1])


def _publish_backbone(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory import storage
    from factory.checkpoints.recognizer import publish_backbone

    target = storage.absolute(args.target)
    files = publish_backbone(storage.absolute(args.checkpoint), target)
    print(f"published {', '.join(files)} to {target}")


def _export(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory import storage
    from factory.config import ShardSelectionConfig, describe_validation_error
    from factory.errors import ConfigError
    from factory.formats.export import describe, export_dataset

    try:
        select = ShardSelectionConfig(m=_bounds(args.m, "--m"),
                                      similarity=_bounds(args.similarity, "--similarity"),
                                      mixup_share=args.mixup_share)
    except ValidationError as exc:
        raise ConfigError(f"selection: {describe_validation_error(exc)}") from None
    print(describe(export_dataset(storage.absolute(args.dataset), storage.absolute(args.out),
                                  args.format, **select.as_kwargs())))


def _bounds(values: list[float] | None, flag: str) -> tuple[float, float] | None:
    """``--m 0.5`` selects m = 0.5 exactly, ``--m 0.4 0.6`` the inclusive range."""
    if values is None:
        return None
    if len(values) > 2 or values[0] > values[-1]:
        raise UserError(f"{flag}: expected one value or LOW HIGH with LOW <= HIGH, got "
                        f"{' '.join(map(str, values))}")
    return values[0], values[-1]


def _verify(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory import storage
    from factory.synth.verify import damage_message, verify_dataset

    verification = verify_dataset(storage.absolute(args.dataset))
    if verification.damaged:
        raise UserError(damage_message(verification))
    print(f"dataset {verification.dataset}: {verification.shards} shards, "
          f"{verification.samples} samples; shards/ holds exactly the listed shards, each "
          "with its recorded size, sha256 and sample count and its Parquet metadata row for "
          "row, and the manifest's counts match")


def _sweep(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.sweep.run import run_sweep

    outcome = run_sweep(config, cli_address=args.address)
    print(f"\n== sweep {config.sweep.name}: {outcome.trials} trials (MLflow experiment "
          f"{config.runtime.experiment!r}), finished trials ranked on validation")
    print(outcome.table)
    if outcome.figure:
        print(f"accuracy against m: {outcome.figure}")


def _compare(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.sweep.compare import compare_sweeps

    comparison = compare_sweeps(config, args.experiment, args.sweep, args.out)
    print(comparison.table)
    if comparison.figure:
        print(f"accuracy against m: {comparison.figure}")


def _pipeline(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.pipeline import run_pipeline

    run_pipeline(config, cli_address=args.address)


def _experiments(config: FactoryConfig, args: argparse.Namespace) -> None:
    from factory.experiments.run import run_experiments

    page = run_experiments(config, cli_address=args.address, small=args.small, only=args.study,
                           page_only=args.page_only)
    print(f"results page: {page}")


def _doctor(config: FactoryConfig, args: argparse.Namespace) -> int:
    from factory.doctor import run_doctor

    checks = run_doctor(config, args.address)
    for check in checks:
        print(check.line())
    return 0 if all(check.ok for check in checks) else 1


def _pipeline_inputs(config: FactoryConfig) -> None:
    """What ``pipeline`` reads: the recognizer's data and benchmarks; with
    ``generator.checkpoint`` also the generator stages' inputs, and E_id when that checkpoint
    is first trained further from ``generator.init_from``."""
    reads: list[Input] = [layout.recognizer_data_uri, layout.evaluation_benchmark_uris]
    if config.generator.checkpoint:
        reads += [layout.inquiry_data_uri, layout.generator_data_uri,
                  layout.synthesis_inquiry_uri]
    if config.generator.checkpoint and config.generator.init_from:
        reads.append(layout.identity_encoder_uri)
    for resolve in reads:
        resolve(config)


COMMANDS: dict[str, Command] = {
    "faceworld": Command("render the built-in face world (RecordIO + .bin benchmarks)",
                         _faceworld, (layout.faceworld_uri,)),
    "baseline": Command("raw-pixel cosine baseline on the face-world benchmarks", _baseline,
                        (layout.baseline_benchmark_uris,)),
    "train-recognizer": Command("train an IResNet with a margin loss under Ray Train",
                                _train_recognizer,
                                (layout.recognizer_data_uri, layout.evaluation_benchmark_uris)),
    "train-generator": Command("train the CemiFace generator under Ray Train", _train_generator,
                               (layout.generator_data_uri, layout.identity_encoder_uri)),
    "generator-report": Command("m-compliance and the CemiFace grid of a generator checkpoint",
                                _generator_report,
                                (layout.inquiry_data_uri, layout.generator_data_uri)),
    "generator-progress": Command("m-compliance of every checkpoint of a generator run, both "
                                  "samplers", _generator_progress, (layout.inquiry_data_uri,)),
    "evaluate": Command("10-fold verification of a recognizer on .bin benchmarks", _evaluate,
                        (layout.evaluation_benchmark_uris,)),
    "synthesize": Command("sample a synthetic dataset into WebDataset shards (Ray Data actors)",
                          _synthesize, (layout.synthesis_inquiry_uri,)),
    "analyze": Command("similarity statistics, m compliance and the privacy check of a dataset",
                       _analyze),
    "publish-backbone": Command("copy a recognizer checkpoint's backbone without its training "
                                "state (the shipped judge)", _publish_backbone),
    "export": Command("write a dataset as insightface RecordIO or an image folder, with its "
                      "metadata", _export),
    "verify": Command("check a synthesised dataset's shards against its manifest (the files, "
                      "sizes, sha256, sample counts, Parquet metadata)", _verify),
    "sweep": Command("Ray Tune trials over m ranges, mixup and recognizer settings, in MLflow",
                     _sweep),
    "compare": Command("a sweep's settings (mean +- std over seeds) and trials, ranked on "
                       "validation, with test AVG and GtR, and accuracy against m, from MLflow",
                       _compare),
    "pipeline": Command("run every stage end to end from one config", _pipeline,
                        (_pipeline_inputs,)),
    "experiments": Command("the face-world studies (m, similarity groups, lambda = 0, SynFace, "
                           "GtR) over seeds, resumably, into a results page", _experiments),
    "doctor": Command("check Python, torch, Ray, MLflow, storage and the CPU's matmul features, "
                      "one line each (starts nothing)", _doctor),
}
"""Every command, with what it reads: adding one is one entry here (and its handler above)."""


def require_inputs(config: FactoryConfig, command: str) -> None:
    """Resolve every input ``command`` reads, before it does any work: a config without a
    face world stops at once on the first data key or E_id it leaves unset. Then refuse the
    production configs' placeholder URIs (``doctor`` excepted: it reports on the setup,
    placeholders and all)."""
    for resolve in COMMANDS[command].reads:
        resolve(config)
    if command != "doctor":
        config.refuse_placeholders()


class _Version(argparse.Action):
    """``--version``: the code version every artefact records, computed only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from factory.provenance import code_version

        print(code_version())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factory", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        sub.add_argument("--config", help="YAML config file (defaults apply when omitted)")
        sub.add_argument("--address", help="Ray cluster address (overrides RAY_ADDRESS)")
        if name == "faceworld":
            sub.add_argument("--out", help="output URI (overrides faceworld.out)")
        if name == "compare":
            sub.add_argument("--experiment", help="MLflow experiment (default: "
                                                  "runtime.experiment)")
            sub.add_argument("--sweep", help="only this sweep's trials (default: all sweeps)")
            sub.add_argument("--out", default=".", help="folder for accuracy_vs_m.png")
        if name in ("analyze", "verify"):
            sub.add_argument("dataset", metavar="DIR", help="a dataset written by synthesize")
        if name == "generator-report":
            sub.add_argument("--validation", action="store_true",
                             help="measure the validation identities (0 .. "
                                  "generator.compliance.validation_identities - 1), the ones "
                                  "lever choices may see, into generator-report-validation/")
        if name == "generator-progress":
            sub.add_argument("folder", nargs="?", metavar="DIR",
                             help="folder of checkpoints (default: this config's run folder)")
        if name == "publish-backbone":
            sub.add_argument("checkpoint", metavar="CHECKPOINT", help="a recognizer checkpoint")
            sub.add_argument("target", metavar="OUT", help="the folder to publish to")
        if name == "export":
            _export_arguments(sub)
        if name == "experiments":
            sub.add_argument("--small", action="store_true",
                             help="the experiments.small preset (minutes, not hours), in its "
                                  "own workdir and results folder")
            sub.add_argument("--study", action="append", metavar="NAME",
                             help="run only this study (repeatable; the others need the m "
                                  "study's results)")
            sub.add_argument("--page-only", action="store_true",
                             help="run nothing: write the page (and its results.json copy) "
                                  "from the workdir's results.json as it stands")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def _export_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("dataset", metavar="DIR",
                     help="a dataset the factory reads: shards, RecordIO or an image folder")
    sub.add_argument("--format", required=True, metavar="{rec,folder}",
                     help="rec: train.rec/train.idx/property; folder: OUT/<identity>/<n>.jpg")
    sub.add_argument("--out", required=True, help="output directory (new or empty, or an "
                                                  "earlier export of the same to resume)")
    selection = sub.add_argument_group("selection (shards only, as recognizer.select)")
    selection.add_argument("--m", nargs="+", type=float, metavar="M",
                           help="requested m: one value, or LOW HIGH (inclusive)")
    selection.add_argument("--similarity", nargs="+", type=float, metavar="S",
                           help="measured similarity to the identity center: LOW HIGH")
    selection.add_argument("--mixup-share", type=float, metavar="SHARE",
                           help="share of identity-mixup identities among those kept")


def error_line(command: str, exc: UserError) -> str:
    """``factory <command>: error: <message>`` on one line of at most :data:`MAX_ERROR_CHARS`
    characters, whatever the message holds (line breaks from a library, a huge quoted value)."""
    line = f"factory {command}: error: {' '.join(str(exc).split())}"
    if len(line) <= MAX_ERROR_CHARS:
        return line
    cut = f" ... (cut from {len(line)} characters)"
    return line[:MAX_ERROR_CHARS - len(cut)] + cut


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        require_inputs(config, args.command)
        use_storage_endpoint(config.runtime)
        code = COMMANDS[args.command].run(config, args)
    except UserError as exc:
        print(error_line(args.command, exc), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            raise
        print(error_line(args.command, full), file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an MLflow tracking store that did not answer: the user's to start
        lost = store_unavailable(exc)
        if lost is None:
            raise
        print(error_line(args.command, lost), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"factory {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
