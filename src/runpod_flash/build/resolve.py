"""Which config a decorator's resource argument refers to, as far as source text can tell.

Used before the guarded import, to report route mistakes at their line instead of as an
import failure; the import's live objects have the final word.
"""

from __future__ import annotations

from collections import defaultdict

from .scanner import ConfigDecl, FunctionDecl, ModuleScan


class ConfigResolver:
    """Follows a name to its config: same module, then imports, then a project-unique name."""

    def __init__(self, scans: dict[str, ModuleScan]) -> None:
        self.scans = scans
        self.by_variable: dict[str, list[ConfigDecl]] = defaultdict(list)
        for scan in scans.values():
            for variable, decl in scan.configs.items():
                self.by_variable[variable].append(decl)

    def _in_module(self, module: str, variable: str) -> ConfigDecl | None:
        scan = self.scans.get(module)
        return scan.configs.get(variable) if scan else None

    def resolve(self, function: FunctionDecl) -> ConfigDecl | None:
        if function.resource_ref is None:
            return function.inline_config
        module, variable = self._origin(self.scans[function.module], function.resource_ref)
        found = self._in_module(module, variable)
        if found is None:
            candidates = self.by_variable.get(variable, [])
            found = candidates[0] if len(candidates) == 1 else None
        return found

    @staticmethod
    def _origin(scan: ModuleScan, ref: str) -> tuple[str, str]:
        """(module, variable) that `ref` names, as seen from inside `scan`'s module."""
        if "." in ref:
            head, variable = ref.rsplit(".", 1)
            return scan.module_aliases.get(head, head), variable
        return scan.imported_names.get(ref, (scan.module, ref))
