"""Shared command-line pieces of the benchmarks: ``--device``.

Every benchmark takes ``--device cpu|cuda|cuda:N`` (default ``cpu``, the figures of README.md); the model
is built on the CPU and moved there, and the gradient engines move the data after it (through pinned
memory), so a benchmark needs only ``ae = build(cfg).to(args.device)``.
"""

from __future__ import annotations

import argparse

import torch

from aezoo.runs import check_device


def add_device(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    """Add ``--device`` (checked when parsed: an unknown name or a missing GPU is a clear error)."""

    def checked(name: str) -> str:
        try:
            check_device(name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err
        return name

    parser.add_argument("--device", type=checked, default=default,
                        help="cpu, cuda or cuda:N: where the models train and are evaluated")


def device_name(device: str) -> str:
    """``"cpu"``, or the GPU's name, for a benchmark's JSON line."""
    dev = torch.device(device)
    return "cpu" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
