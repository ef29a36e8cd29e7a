#!/usr/bin/env python3
"""Man pages and shell completion, generated from the argument parsers and the config's key table.

    python scripts/gendocs.py OUTDIR
writes OUTDIR/man/horizond.8, horizonctl.8, horizond.toml.5 and OUTDIR/completion/horizonctl (bash),
_horizonctl (zsh). scripts/build-deb ships them; tests/test_gendocs.py checks they name every
subcommand, option and config key. Generated, never edited: they cannot drift from the code.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from horizond import __version__  # noqa: E402
from horizond.cli import build_parser as horizond_parser  # noqa: E402
from horizond.control.ctl import build_parser as ctl_parser  # noqa: E402
from horizond.core import config as core_config  # noqa: E402

# supervisor names for completion: the running daemon's, when the caller may ask it (cheap: one request)
SUPERVISORS_CMD = "horizonctl $sock supervisors 2>/dev/null | awk 'NR > 1 {print $1}'"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (help, parser), in the order `--help` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


# --- roff ------------------------------------------------------------------------------------


def esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def header(name: str, section: int, what: str) -> list[str]:
    date = datetime.date.today().isoformat()
    return [f'.TH {name.upper()} {section} "{date}" "horizond {__version__}" "horizond"', ".SH NAME",
            f"{esc(name)} \\- {esc(what)}"]


def option_label(action: argparse.Action) -> str:
    label = ", ".join(f"\\fB{esc(o)}\\fR" for o in action.option_strings)
    if action.nargs != 0:
        meta = action.metavar or ("{" + ",".join(action.choices) + "}" if action.choices else action.dest.upper())
        label += f" \\fI{esc(str(meta))}\\fR"
    return label


def usage_line(parser: argparse.ArgumentParser) -> str:
    return esc(" ".join(parser.format_usage().split())[len("usage: "):])


def option_items(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in options(parser):
        lines += [".TP", option_label(action), esc(action.help or "")]
    return lines


def horizond_page() -> str:
    from horizond.web.server import build_parser as web_parser

    parser, web = horizond_parser(), web_parser()
    lines = header("horizond", 8, "supervisor of RQ worker processes")
    lines += [".SH SYNOPSIS", usage_line(parser), ".br", usage_line(web), ".SH DESCRIPTION",
              esc(parser.description or ""),
              esc("The master reads its config (horizond.toml(5)), forks the RQ workers its supervisors ask for, "
                  "balances them between queues, and answers horizonctl(8) on a Unix socket. Under systemd it "
                  "runs as horizond.service (Type=notify); SIGHUP or `horizonctl reload` re-reads the config."),
              ".SH OPTIONS", *option_items(parser), ".SH COMMANDS", ".TP", "\\fBweb\\fR",
              esc((web.description or "") + " Started by the master when [web] listen is set; run it alone on "
                  "a host with no master."), ".RS", *option_items(web), ".RE",
              ".SH FILES", ".TP", "/etc/horizond/horizond.toml", "the config (horizond.toml(5))", ".TP",
              "/run/horizond/horizond.sock", "the control socket", ".TP", "/lib/systemd/system/horizond.service",
              "the hardened systemd unit",
              ".SH EXIT STATUS", "0 after a clean stop or a valid --check-config; 2 for an invalid config.",
              ".SH SEE ALSO", "horizonctl(8), horizond.toml(5), systemctl(1), journalctl(1)"]
    return "\n".join(lines) + "\n"


def horizonctl_page() -> str:
    parser = ctl_parser()
    lines = header("horizonctl", 8, "control a running horizond")
    lines += [".SH SYNOPSIS", usage_line(parser), ".SH DESCRIPTION", esc(parser.description or ""),
              esc("It talks to horizond(8) over its control socket; root, the daemon's user and members of "
                  "[control] group have full control, members of [control] readers may only look."),
              ".SH OPTIONS", *option_items(parser), ".SH COMMANDS"]
    for name, (help_text, sub) in subcommands(parser).items():
        args = " ".join(f"\\fI{esc(a.metavar or a.dest)}\\fR" if not a.choices else
                        f"\\fI{esc('|'.join(a.choices))}\\fR" for a in positionals(sub))
        lines += [".TP", f"\\fB{esc(name)}\\fR {args}".rstrip(), esc(help_text)]
        if options(sub):
            lines += [".RS", *option_items(sub), ".RE"]
    lines += [".SH EXIT STATUS", esc("0 on success, non-zero with a one-line error otherwise; `status` exits 0 "
                                     "running, 1 paused, 2 not running; `health` 0 green, 1 yellow, 2 red."),
              ".SH SEE ALSO", "horizond(8), horizond.toml(5)"]
    return "\n".join(lines) + "\n"


def config_page() -> str:
    lines = header("horizond.toml", 5, "the horizond config file")
    lines += [".SH DESCRIPTION", esc("A TOML file of tables. horizond(8) refuses a file with an unknown table or "
                                     "key, naming it; `horizond --check-config` checks a file without starting "
                                     "anything. The annotated example below explains every key."),
              ".SH TABLES AND KEYS"]
    free = {"waits": "queue names or patterns, each = seconds", "supervisors": "[supervisors.NAME]: the keys of "
            "[defaults]", "cron": "[cron.NAME]: scheduled jobs", "limits": '[limits."PATTERN"]: rate limits',
            "breakers": "[breakers.NAME]: circuit breakers"}
    for table, keys in core_config._TABLES.items():
        lines += [".TP", f"\\fB[{esc(table)}]\\fR", esc(", ".join(sorted(keys)) if keys else free.get(table, ""))]
    example = (ROOT / "etc/horizond.toml").read_text()
    lines += [".SH EXAMPLE", "The config the package installs as /etc/horizond/horizond.toml:", ".PP", ".nf",
              esc(example), ".fi", ".SH SEE ALSO", "horizond(8), horizonctl(8)"]
    return "\n".join(lines) + "\n"


# --- completion ------------------------------------------------------------------------------


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def bash_completion() -> str:
    parser = ctl_parser()
    subs = subcommands(parser)
    cases = []
    for name, (_, sub) in subs.items():
        opts = " ".join(o for a in options(sub) for o in a.option_strings)
        valued = " ".join(o for a in options(sub) if _takes_value(a) for o in a.option_strings)
        words = []
        for pos in positionals(sub):
            if pos.choices:
                words.append(" ".join(pos.choices))
            elif pos.dest == "supervisor":
                words.append("@supervisors")
            else:
                words.append("")
        words_init = " ".join(f'"{w}"' for w in words)
        cases.append(f'        {name}) opts="{opts}"; valued=" {valued} "; positional=({words_init}) ;;')
    top_valued = "|".join(o for a in options(parser) if _takes_value(a) for o in a.option_strings)
    return f"""# bash completion for horizonctl (generated by scripts/gendocs.py from its parser; do not edit)
_horizonctl() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local i cmd="" sock="" opts="" valued="" count=0 word
    local -a positional=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ -z $cmd ]]; then
            case $word in
                --socket|--config|-c) sock="$sock $word ${{COMP_WORDS[i+1]}}"; ((i++)) ;;
                -*) ;;
                *) cmd=$word ;;
            esac
        fi
    done
    case $prev in
        {top_valued}) [[ -z $cmd ]] && {{ COMPREPLY=($(compgen -f -- "$cur")); return; }} ;;
    esac
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "{" ".join(o for a in options(parser) for o in a.option_strings)} {" ".join(subs)}" \\
                     -- "$cur"))
        return
    fi
    case $cmd in
{chr(10).join(cases)}
        *) return ;;
    esac
    # which positional argument is being completed: words after the command, less options and their values
    for ((i = 1; i < COMP_CWORD; i++)); do [[ ${{COMP_WORDS[i]}} == "$cmd" ]] && break; done
    for ((i = i + 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if [[ $word == -* ]]; then
            [[ $valued == *" $word "* ]] && ((i++))
        else
            ((count++))
        fi
    done
    if [[ $prev == -* && $valued == *" $prev "* ]]; then
        COMPREPLY=()  # an option's value: nothing to offer
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    local want=${{positional[count]}}
    if [[ $want == @supervisors ]]; then
        want=$({SUPERVISORS_CMD})
    fi
    COMPREPLY=($(compgen -W "$want $opts" -- "$cur"))
}}
complete -F _horizonctl horizonctl
"""


def zsh_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "'\\''").replace("[", "\\[").replace("]", "\\]") \
        .replace(":", "\\:")


def zsh_spec(action: argparse.Action) -> str:
    help_text = zsh_quote((action.help or "").split(";")[0])
    value = ""
    if _takes_value(action):
        meta = zsh_quote(str(action.metavar or action.dest))
        value = f":{meta}:({' '.join(action.choices)})" if action.choices else f":{meta}:_files" \
            if "PATH" in str(action.metavar) else f":{meta}:"
    names = action.option_strings
    if len(names) == 1:
        return f"'{names[0]}[{help_text}]{value}'"
    return f"'({' '.join(names)})'{{{','.join(names)}}}'[{help_text}]{value}'"


def zsh_completion() -> str:
    parser = ctl_parser()
    subs = subcommands(parser)
    described = "\n".join(f"        '{zsh_quote(name)}:{zsh_quote(text)}'" for name, (text, _) in subs.items())
    cases = []
    for name, (_, sub) in subs.items():
        specs = [zsh_spec(a) for a in options(sub)]
        for index, pos in enumerate(positionals(sub), start=1):
            optional = ":" if pos.nargs in ("?", "*") else ""
            rest = "*" if pos.nargs in ("*", "+") else str(index)
            if pos.choices:
                specs.append(f"'{rest}:{optional}{pos.dest}:({' '.join(pos.choices)})'")
            elif pos.dest == "supervisor":
                specs.append(f"'{rest}:{optional}supervisor:_horizonctl_supervisors'")
            else:
                specs.append(f"'{rest}:{optional}{zsh_quote(str(pos.metavar or pos.dest))}:'")
        call = f"_arguments {' '.join(specs)}" if specs else "_message 'no more arguments'"
        cases.append(f"            {name}) {call} ;;")
    top = " ".join(zsh_spec(a) for a in options(parser))
    return f"""#compdef horizonctl
# zsh completion for horizonctl (generated by scripts/gendocs.py from its parser; do not edit)

_horizonctl_supervisors() {{
    local sock=""
    (( ${{+opt_args[--socket]}} )) && sock="--socket ${{opt_args[--socket]}}"
    local -a names
    names=(${{(f)"$(horizonctl ${{=sock}} supervisors 2>/dev/null | awk 'NR > 1 {{print $1}}')"}})
    _describe -t supervisors supervisor names
}}

_horizonctl() {{
    local curcontext=$curcontext state line
    typeset -A opt_args
    _arguments -C {top} '1:command:->command' '*::argument:->argument'
    case $state in
        command)
            local -a commands
            commands=(
{described}
            )
            _describe -t commands command commands ;;
        argument)
            case $line[1] in
{chr(10).join(cases)}
            esac ;;
    esac
}}

_horizonctl "$@"
"""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gendocs.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    (out / "man").mkdir(parents=True, exist_ok=True)
    (out / "completion").mkdir(parents=True, exist_ok=True)
    (out / "man/horizond.8").write_text(horizond_page())
    (out / "man/horizonctl.8").write_text(horizonctl_page())
    (out / "man/horizond.toml.5").write_text(config_page())
    (out / "completion/horizonctl").write_text(bash_completion())
    (out / "completion/_horizonctl").write_text(zsh_completion())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
