"""Modal dialogs: confirmation (Cancel focused), a reason, a form of inputs, help.

What they say is plain text, escaped (titles and lines quote names, notes and values typed):
never markup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ..texts import printable


class ConfirmScreen(ModalScreen[bool]):
    """Lists exactly the items captured when the key was pressed; Cancel has the focus."""

    BINDINGS = [
        Binding("y", "confirm", "Yes", id="confirm.yes"),
        Binding("n,escape", "cancel", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, lines: list[str], verb: str):
        super().__init__()
        self.title_text = title
        self.lines = lines
        self.verb = verb

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(printable(self.title_text), id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-items"):
                yield Static("\n".join(map(printable, self.lines)), markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button(f"{self.verb} (y)", id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class FormScreen(ModalScreen[dict[str, str] | None]):
    """A small form: one Input per field; enter submits, escape cancels."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        # Enter is handled here, as a key, not when the Input's Submitted message arrives: over a
        # laggy link "abc⏎pass" comes in one burst, and keys typed after the Enter must land in
        # the next field, so the focus has to move before the next key is dispatched.
        Binding("enter", "enter", "Next field / submit", show=False, priority=True, id="form.enter"),
    ]

    def __init__(
        self,
        title: str,
        fields: list[dict[str, Any]],
        submit: str = "OK",
        note: str = "",
        *,
        starts_work: bool = False,
        validate: Callable[[dict[str, str]], tuple[str | None, str] | None] | None = None,
    ):
        """fields: [{name, label, placeholder, value, required}]. `starts_work`: submitting starts
        something (a run), so a bare Enter must never submit: Cancel has the focus unless a required
        field is still empty (Enter there only says it is required)."""
        super().__init__()
        self.starts_work = starts_work
        self.validate = validate  # (field name, why) for a value the use case would refuse: the form stays
        self.title_text = title
        self.fields = fields
        self.submit = submit
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(printable(self.title_text), id="dialog-title", markup=False)
            if self.note:
                yield Static(printable(self.note), id="dialog-note", markup=False)
            with VerticalScroll(id="dialog-items"):
                for i, f in enumerate(self.fields):
                    yield Label(
                        printable(f["label"], cell=True) + (" *" if f.get("required") else ""), markup=False
                    )
                    yield Input(
                        value=str(f.get("value") or ""),
                        placeholder=f.get("placeholder", ""),
                        id=f"field-{i}",
                        password=bool(f.get("secret")),
                    )
            yield Static("", id="dialog-error", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button(self.submit, id="submit", variant="primary")

    def on_mount(self) -> None:
        inputs = list(self.query(Input))
        if self.starts_work:
            empty = [i for i, f in zip(inputs, self.fields, strict=True) if f.get("required") and not i.value]
            (empty[0] if empty else self.query_one("#cancel", Button)).focus()
        elif inputs:
            inputs[0].focus()
        else:
            self.query_one("#submit", Button).focus()

    def values(self) -> dict[str, str]:
        return {f["name"]: self.query_one(f"#field-{i}", Input).value for i, f in enumerate(self.fields)}

    def action_enter(self) -> None:
        focused = self.focused
        if isinstance(focused, Button):
            focused.press()
            return
        inputs = list(self.query(Input))
        if isinstance(focused, Input) and focused in inputs and inputs.index(focused) + 1 < len(inputs):
            self.set_focus(inputs[inputs.index(focused) + 1])  # at once, not after a refresh
        elif focused is not None:
            # the keys typed before this Enter may still wait in the field's own queue: submit
            # after them, so the values are what was typed
            focused.call_later(self._submit)
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        values = self.values()
        missing = [f["label"] for f in self.fields if f.get("required") and not values[f["name"]].strip()]
        if missing:
            self.query_one("#dialog-error", Static).update(printable(f"required: {', '.join(missing)}"))
            return
        problem = self.validate(values) if self.validate else None
        if problem is not None:  # keep what was typed; say which field, and put the cursor there
            name, why = problem
            self.query_one("#dialog-error", Static).update(printable(why))
            names = [f["name"] for f in self.fields]
            if name in names:
                self.query_one(f"#field-{names.index(name)}", Input).focus()
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class InfoScreen(ModalScreen[None]):
    """Lines to read (a preview), nothing to decide: escape closes."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close", id="info.close")]

    def __init__(self, title: str, lines: list[str]):
        super().__init__()
        self.title_text = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(printable(self.title_text), id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-items"):
                yield Static("\n".join(map(printable, self.lines)), markup=False)
            yield Static("escape closes", id="dialog-note")

    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys of the pane that had the focus."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, title: str, keys: list[tuple[str, str]]):
        super().__init__()
        self.title_text = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.keys), default=4)
        with Vertical(id="dialog"):
            yield Label(printable(self.title_text), id="dialog-title", markup=False)
            with VerticalScroll(id="dialog-items"):
                yield Static("\n".join(f"{k.ljust(width)}  {d}" for k, d in self.keys), markup=False)
            yield Static("escape closes", id="dialog-note")

    def action_close(self) -> None:
        self.dismiss(None)
