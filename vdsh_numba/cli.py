"""The ``vdsh`` command: one subcommand per pipeline stage (``vdsh train --help``)."""
from __future__ import annotations

import sys

import click

from . import stages
from .params import ParamsError, load_params

params_opt = click.option("--params", "params_file", default="params.yaml", show_default=True,
                          type=click.Path(dir_okay=False), help="the params file to read")
method_opt = click.option("--method", required=True, help="hashing method (one of params.yaml's methods)")
bits_opt = click.option("--bits", required=True, type=int, help="code length")


def _run(fn, params_file, *args):
    try:
        p = load_params(params_file)
        fn(p, *args)
    except (ParamsError, FileNotFoundError, ValueError, TypeError, MemoryError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@click.group()
def main():
    """VDSH: very deep supervised hashing trained by layer-wise ADMM (Numba + DVC)."""


@main.command()
@params_opt
def download(params_file):
    """Load the raw dataset (digits: bundled; mnist: IDX files in data_dir, else downloaded)."""
    _run(stages.download, params_file)


@main.command()
@params_opt
def features(params_file):
    """Split queries / database / training per class and standardize the features."""
    _run(stages.features, params_file)


@main.command()
@params_opt
@method_opt
@bits_opt
def train(params_file, method, bits):
    """Fit METHOD at BITS on the training items and save the model (.npz)."""
    _run(stages.train, params_file, method, bits)


@main.command()
@params_opt
@method_opt
@bits_opt
def encode(params_file, method, bits):
    """Packed codes of queries and database by a forward pass of the trained model."""
    _run(stages.encode, params_file, method, bits)


@main.command()
@params_opt
@method_opt
@bits_opt
def evaluate(params_file, method, bits):
    """Hamming ranking of the database for every query; mAP, tie-aware mAP, P@H<=2, PR curve."""
    _run(stages.evaluate, params_file, method, bits)


@main.command()
@params_opt
def report(params_file):
    """Aggregate every method x code length into reports/ (metrics.json, results.md, plots)."""
    _run(stages.report, params_file)


@main.command()
@params_opt
def check(params_file):
    """Validate params.yaml (and say what is wrong) without running anything."""
    try:
        p = load_params(params_file)
    except ParamsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    click.echo(f"{params_file}: ok ({p['dataset']}, methods {p['methods']}, bits {p['bits']}, "
               f"depth {p['depth']} x width {p['width']})")


if __name__ == "__main__":
    main()
