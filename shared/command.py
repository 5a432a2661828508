"""What every long-running console script does first: answer --help, and read the settings,
turning a config error into one line that names the file and the setting (exit 2)."""

from __future__ import annotations

import argparse

from shared.settings import Settings, SettingsError, load_settings


def settings_from_command_line(prog: str, description: str | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configured by the TOML file named by HH_CONFIG (or --config) and HH_* "
               "environment variables; see docs/reference/configuration.md.")
    parser.add_argument("--config", help="the TOML config file (default: $HH_CONFIG)")
    args = parser.parse_args()
    try:
        return load_settings(args.config)
    except SettingsError as exc:
        parser.exit(2, f"{prog}: {exc}\n")
