"""The ``crossent`` command: information measures from the shell.

Each subcommand is a pair of small functions plus one registration::

    def _add_NAME_parser(subparsers):     # build its parser, set run=_run_NAME
    def _run_NAME(args) -> Output:        # compute; return text and a JSON dict

and its adder is appended to :data:`SUBCOMMANDS`.  :func:`main` does the rest:
plain text by default, one JSON object with ``--json`` (stdout holds only the
result; progress and notes go to stderr), and never a traceback for what a
user can do wrong: bad input (a `ValueError`/`TypeError` from the library, an
unparsable number, a bad path) exits with status 2 and a single line on stderr;
a file that cannot be written or a missing optional module with status 1;
Ctrl-C with 130; a closed pipe (``| head``) quietly with 141.  Heavy optional
imports (matplotlib, torch) belong inside a ``_run_NAME`` function, never at
the top of this module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field

from . import measures
from ._cli_eval import add_eval_parser

EXIT_FAILURE = 1  # the command could not finish: a file could not be written, a module is missing
EXIT_USAGE = 2  # bad input: an option, a number, a path
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_BROKEN_PIPE = 141  # the reader went away (``| head``), as a shell reports SIGPIPE


@dataclass
class Output:
    """What a subcommand produced: `text` for people, `data` for ``--json``."""

    text: str
    data: dict = field(default_factory=dict)


class _UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit, so main() decides."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


# ------------------------------------------------------------ argument types


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _base(text: str) -> float | None:
    """``e`` means nats (None); anything else must parse as a number."""
    return None if text.strip().lower() == "e" else _number(text)


def _unit(base: float | None) -> str:
    if base is None or base == math.e:
        return "nats"
    shown = f"{base:g}" if float(f"{base:g}") == base else repr(float(base))  # 1.0000000000000002 is not 1
    return {2.0: "bits", 10.0: "hartleys"}.get(float(base), f"log-base-{shown} units")


def _quantity(value: float, unit: str) -> str:
    """``1.5 bits``, ``1 bit``: six significant digits and the unit."""
    shown = f"{float(value):.6g}"
    return f"{shown} {unit[:-1] if shown == '1' else unit}"


def _json_number(value: float):
    """JSON has no infinity: +inf is written as the string "inf"."""
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _unit_options() -> argparse.ArgumentParser:
    """Options shared by every measure: --base and --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base", type=_base, default=None, metavar="B",
                        help="logarithm base: 2 for bits, e (default) for nats, 10 for hartleys")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.set_defaults(strict_floats=True)  # a RuntimeWarning (overflow, ...) means a wrong number: refuse it
    return common


def _normalize_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--normalize", action="store_true",
                        help="treat the numbers as non-negative weights or counts and divide by their sum")
    return common


def _subparser(subparsers, name, *, help, examples, parents=()):
    return subparsers.add_parser(
        name, help=help, description=help[:1].upper() + help[1:] + ".", epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=list(parents),
    )


# ------------------------------------------------------------- subcommands


def _add_info_parser(subparsers):
    parser = _subparser(
        subparsers, "info", help="self-information -log p of each probability", parents=[_unit_options()],
        examples="  crossent info 0.01 --base 2        # a 1-in-100 event: 6.64386 bits\n"
                 "  crossent info 0.5 0.25 0.125 --base 2 --json\n",
    )
    parser.add_argument("p", nargs="+", type=_number, help="probabilities in [0, 1]")
    parser.set_defaults(run=_run_info)


def _run_info(args) -> Output:
    values = [float(v) for v in measures.self_information(args.p, base=args.base)]
    unit = _unit(args.base)
    text = "\n".join(f"I({p:g}) = {_quantity(v, unit)}" for p, v in zip(args.p, values))
    data = {"measure": "self-information", "unit": unit, "base": args.base, "p": args.p,
            "values": [_json_number(v) for v in values]}
    return Output(text, data)


def _add_entropy_parser(subparsers):
    parser = _subparser(
        subparsers, "entropy", help="Shannon entropy H(p) of one distribution",
        parents=[_unit_options(), _normalize_option()],
        examples="  crossent entropy 0.5 0.25 0.25 --base 2       # H(p) = 1.5 bits\n"
                 "  crossent entropy 30 10 10 --normalize --json  # counts\n",
    )
    parser.add_argument("p", nargs="+", type=_number, help="probabilities summing to 1 (or counts with --normalize)")
    parser.set_defaults(run=_run_entropy)


def _run_entropy(args) -> Output:
    value = measures.entropy(args.p, base=args.base, normalize=args.normalize)
    return _scalar_output("entropy", "H(p)", value, args, p=args.p)


def _add_pair_parser(subparsers, name, *, help, run, examples):
    """A measure of two distributions given as --p ... --q ..."""
    parser = _subparser(subparsers, name, help=help, examples=examples,
                        parents=[_unit_options(), _normalize_option()])
    parser.add_argument("--p", nargs="+", type=_number, required=True, metavar="P",
                        help="the true distribution p (or counts with --normalize)")
    parser.add_argument("--q", nargs="+", type=_number, required=True, metavar="Q",
                        help="the model distribution q, same number of outcomes as p")
    parser.set_defaults(run=run)


def _add_cross_entropy_parser(subparsers):
    _add_pair_parser(
        subparsers, "cross-entropy", help="cross-entropy H(p, q) = -sum p log q", run=_run_cross_entropy,
        examples="  crossent cross-entropy --p 0.5 0.5 --q 0.9 0.1 --base 2   # 1.73697 bits\n",
    )


def _run_cross_entropy(args) -> Output:
    value = measures.cross_entropy(args.p, args.q, base=args.base, normalize=args.normalize)
    return _scalar_output("cross-entropy", "H(p, q)", value, args, p=args.p, q=args.q)


def _add_kl_parser(subparsers):
    _add_pair_parser(
        subparsers, "kl", help="Kullback-Leibler divergence D(p || q), p the truth", run=_run_kl,
        examples="  crossent kl --p 0.5 0.25 0.125 0.125 --q 0.25 0.25 0.25 0.25 --base 2   # 0.25 bits\n",
    )


def _run_kl(args) -> Output:
    value = measures.kl_divergence(args.p, args.q, base=args.base, normalize=args.normalize)
    return _scalar_output("kl-divergence", "D(p || q)", value, args, p=args.p, q=args.q)


def _add_js_parser(subparsers):
    _add_pair_parser(
        subparsers, "js", help="Jensen-Shannon divergence JS(p, q) (at most 1 bit)", run=_run_js,
        examples="  crossent js --p 1 0 --q 0 1 --base 2   # 1 bit: the most two coins can differ\n",
    )


def _run_js(args) -> Output:
    value = measures.js_divergence(args.p, args.q, base=args.base, normalize=args.normalize)
    return _scalar_output("js-divergence", "JS(p, q)", value, args, p=args.p, q=args.q)


def _scalar_output(measure: str, symbol: str, value, args, **inputs) -> Output:
    unit = _unit(args.base)
    data = {"measure": measure, "value": _json_number(value), "unit": unit, "base": args.base,
            "normalize": args.normalize, **inputs}
    return Output(f"{symbol} = {_quantity(value, unit)}", data)


def _add_report_parser(subparsers):
    from .lab.report import add_report_arguments  # light: matplotlib loads only when the report runs

    parser = _subparser(subparsers, "report", help="run the lab's experiments and write an HTML report",
                        examples="  crossent report                              # ./crossent-report/index.html\n"
                                 "  crossent report --quick --out /tmp/r --jobs 2\n"
                                 "  crossent report --lang zh                    # the report in Chinese\n")
    add_report_arguments(parser)
    parser.set_defaults(run=_run_report)


def _run_report(args) -> Output:
    from .lab.report import report_command

    return Output(*report_command(args))


def _add_explore_parser(subparsers):
    from .lab.explorer import add_explore_arguments  # light: NumPy only, no lab extra needed

    parser = _subparser(subparsers, "explore", help="write the explorer, the article as one live HTML page",
                        examples="  crossent explore --open                      # ./crossent-explorer/index.html\n"
                                 "  crossent explore --out /tmp/explorer\n")
    add_explore_arguments(parser)
    parser.set_defaults(run=_run_explore)


def _run_explore(args) -> Output:
    from .lab.explorer import explore_command

    return Output(*explore_command(args))


SUBCOMMANDS = [
    _add_report_parser,
    _add_explore_parser,
    _add_info_parser,
    _add_entropy_parser,
    _add_cross_entropy_parser,
    _add_kl_parser,
    _add_js_parser,
    add_eval_parser,
]


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``crossent`` parser with every registered subcommand."""
    from . import __version__

    parser = _Parser(
        prog="crossent",
        description="The crossent lab report, and information measures: self-information, entropy, "
                    "cross-entropy, KL and JS divergence.",
        epilog="examples:\n"
               "  crossent report --quick\n"
               "  crossent explore --open\n"
               "  crossent info 0.01 --base 2\n"
               "  crossent entropy 0.5 0.25 0.25 --base 2\n"
               "  crossent cross-entropy --p 0.5 0.5 --q 0.9 0.1 --base 2\n"
               "  crossent kl --p 0.5 0.5 --q 0.9 0.1 --json\n"
               "\n'crossent COMMAND --help' describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crossent {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``crossent`` command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help and --version print and exit normally
        return exc.code if isinstance(exc.code, int) else 0
    prefix = f"crossent {args.command}"
    try:
        with warnings.catch_warnings():
            if getattr(args, "strict_floats", False):
                warnings.simplefilter("error", RuntimeWarning)
            output = args.run(args)
    except RuntimeWarning as exc:
        return _fail(f"{prefix}: error: the numbers are out of float64's range for this computation ({exc})")
    except (ValueError, TypeError) as exc:
        message = str(exc).replace("normalize=True", "--normalize")  # the library's advice, in CLI terms
        return _fail(f"{prefix}: error: {message}")
    except KeyboardInterrupt:
        return _fail(f"{prefix}: interrupted", EXIT_INTERRUPTED)
    except ModuleNotFoundError as exc:
        return _fail(f"{prefix}: error: needs the module {exc.name!r}; install the lab extra: "
                     "pip install 'crossent[lab]'", EXIT_FAILURE)
    except OSError as exc:
        return _fail(f"{prefix}: error: {exc}", EXIT_FAILURE)
    return _print(output.text if not getattr(args, "json", False) else json.dumps(output.data), prefix)


def _print(text: str, prefix: str) -> int:
    """Print the result; a closed pipe (``| head``) exits quietly, a failed write with one line."""
    if sys.stdout is None:  # started with stdout closed: nowhere to print
        return 0
    try:
        try:
            print(text)
        except UnicodeEncodeError:  # a file name the output's encoding cannot show
            encoding = sys.stdout.encoding or "utf-8"
            print(text.encode(encoding, "backslashreplace").decode(encoding))
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        _discard_stdout()
        return _fail(f"{prefix}: error: cannot write the output: {exc.strerror or exc}", EXIT_FAILURE)
    return 0


def _discard_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit does not fail a second time."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stream): nothing to flush
        pass


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    print(" ".join(message.split()), file=sys.stderr)  # always exactly one line
    return status
