"""The ``vdsh`` command: one subcommand per pipeline stage (``vdsh train --help``)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import pipeline
from .pipeline.params import ParamsError, load_params
from .pipeline.entry import run_stage

params_opt = click.option("--params", "params_file", default="params.yaml", show_default=True,
                          type=click.Path(dir_okay=False), help="the params file to read")
method_opt = click.option("--method", required=True, help="hashing method (one of params.yaml's methods)")
bits_opt = click.option("--bits", required=True, type=int, help="code length (one of params.yaml's bits)")


@click.group()
def main():
    """VDSH: very deep supervised hashing trained by layer-wise ADMM (Numba + DVC)."""


@main.command()
@params_opt
def download(params_file):
    """Load the raw dataset (digits: bundled; mnist: IDX files in data_dir, else downloaded)."""
    run_stage(pipeline.download.run, params_file)


@main.command()
@params_opt
def features(params_file):
    """Split queries / database / training per class and standardize the features."""
    run_stage(pipeline.features.run, params_file)


@main.command()
@params_opt
@method_opt
@bits_opt
def train(params_file, method, bits):
    """Fit METHOD at BITS on the training items and save the model (.npz)."""
    run_stage(pipeline.train.run, params_file, method, bits)


@main.command()
@params_opt
@method_opt
@bits_opt
def encode(params_file, method, bits):
    """Packed codes of queries and database by a forward pass of the trained model."""
    run_stage(pipeline.encode.run, params_file, method, bits)


@main.command()
@params_opt
@method_opt
@bits_opt
def evaluate(params_file, method, bits):
    """Hamming ranking of the database for every query; mAP, tie-aware mAP, P@H<=2, PR curve."""
    run_stage(pipeline.evaluate.run, params_file, method, bits)


@main.command()
@params_opt
def report(params_file):
    """Aggregate every method x code length into reports/ (metrics.json, results.md, plots)."""
    run_stage(pipeline.report.run, params_file)


@main.command()
@params_opt
@click.option("--dataset", default=None, help="dataset (default: params.yaml's)")
@click.option("--data-dir", default=None, help="raw data folder (default: params.yaml's data_dir)")
@click.option("--methods", default="all", show_default=True,
              help="'all' or a comma-separated list of methods")
@click.option("--bits", "bits_list", default=None,
              help="comma-separated code lengths (default: params.yaml's bits)")
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="folder for comparison_<dataset>.md/.csv/.png")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False),
              help="scratch folder for the stages' files (default: .compare/<dataset>)")
@click.option("--resume", is_flag=True, help="reuse results already in the work dir for the same params")
def compare(params_file, dataset, data_dir, methods, bits_list, out_dir, work_dir, resume):
    """Every method x code length on one dataset: a table (.md, .csv) and a plot of mAP vs bits.

    Runs the pipeline's own stages in a private work dir (nothing DVC tracks is touched);
    writes only OUT/comparison_<dataset>.md, .csv and .png, once every fit is done.
    """
    from .compare import run_comparison
    cmd = "vdsh compare" + "".join(f" --{k} {v}" for k, v in (
        ("dataset", dataset), ("data-dir", data_dir), ("methods", methods), ("bits", bits_list))
        if v is not None)

    def go(p):
        try:
            bits = None if bits_list is None else [int(b) for b in bits_list.split(",") if b.strip()]
        except ValueError:
            raise ParamsError(f"--bits must be comma-separated integers, got {bits_list!r}") from None
        run_comparison(p, methods, bits, dataset=dataset, data_dir=data_dir, out_dir=out_dir,
                       work_dir=work_dir, resume=resume, command=cmd)
    run_stage(go, params_file)


@main.group()
def study():
    """Studies: grids of runs through the pipeline's stages, one CSV row per run (resumable)."""


@study.command("run")
@params_opt
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default="reports/studies", show_default=True,
              type=click.Path(file_okay=False), help="folder for <name>.csv and <name>.md")
@click.option("--work-dir", "work_root", default=".studies", show_default=True,
              type=click.Path(file_okay=False), help="scratch folder for the stages' files")
@click.option("--dry-run", is_flag=True, help="list the runs still to do and stop")
@click.option("--only", default=None,
              help="comma-separated methods of the spec to run (e.g. one process per core, split by method)")
def study_run(params_file, spec, out_dir, work_root, dry_run, only):
    """Run every run of the study SPEC (studies/<name>.yaml) not yet in OUT/<name>.csv."""
    from .studies import load_study, pending_runs, run_study

    def go(p):
        s = load_study(spec)
        if only:
            keep = [m.strip() for m in only.split(",") if m.strip()]
            bad = sorted(set(keep) - set(s["methods"]))
            if bad:
                raise ParamsError(f"--only {bad} not among the study's methods {s['methods']}")
            s = {**s, "methods": [m for m in s["methods"] if m in keep]}
        if dry_run:
            p = {**p.source, "data_dir": str(Path(p["data_dir"]).resolve())}
            for r in pending_runs(s, p, Path(out_dir) / f"{s['name']}.csv")[1]:
                click.echo(f"{r['method']} {r['bits']} bits seed {r['seed']} {r['setting']}")
            return
        run_study(s, p, out_dir=out_dir, work_root=work_root)
    run_stage(go, params_file)


@study.command("figure")
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--methods", required=True, help="comma-separated, e.g. vdsh,dtsh")
@click.option("--bits", required=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False))
@click.option("--work-dir", "work_root", default=".studies", show_default=True)
def study_figure(csv_file, methods, bits, seed, out_png, work_root):
    """Retrieval examples (8 seeded test queries, top 10 per method) and PR curves, one PNG."""
    from .studies import retrieval_figure
    try:
        retrieval_figure(csv_file, [m.strip() for m in methods.split(",")], bits, seed, out_png,
                         work_root=work_root)
    except (ParamsError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@study.command("best")
@click.argument("csv_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--method", required=True)
def study_best(csv_file, method):
    """The setting of METHOD with the highest mean validation mAP in CSV_FILE."""
    from .studies import best_setting, read_rows
    setting, score = best_setting(read_rows(csv_file), method)
    if setting is None:
        click.echo(f"error: no validation run of {method!r} in {csv_file}", err=True)
        sys.exit(2)
    click.echo(f"{method}: {setting} (mean validation mAP {score:.4f})")


@main.command()
@params_opt
def check(params_file):
    """Validate params.yaml and the data already there (say what is wrong); run and write nothing."""
    try:
        p = load_params(params_file)
    except ParamsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"{params_file}: ok ({p['dataset']}, methods {list(p['methods'])}, bits {list(p['bits'])}, "
               f"depth {p['depth']} x width {p['width']})")
    problems, checked = pipeline.check_data(p)
    for line in checked:
        click.echo(f"checked: {line}")
    for line in problems:
        click.echo(f"error: {line}", err=True)
    if problems:
        sys.exit(2)


if __name__ == "__main__":
    main()
