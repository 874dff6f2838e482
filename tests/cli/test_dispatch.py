import importlib.util

from koda import cli


def test_every_command_points_at_an_existing_module():
    missing = [name for name, (mod, _) in cli.COMMANDS.items() if importlib.util.find_spec(mod) is None]
    assert missing == []


def test_unknown_command_is_one_line_error(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
