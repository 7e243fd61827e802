"""Templates compiled once per locale, with their fixed texts already translated.

A page's labels (`{{ _("Queue") }}`) were translated on every render: each one a Jinja function
call, a catalogue lookup and a Markup wrap, ~100 a ticket page (bench F13). A template asked for as
`<locale>/<name>` (see `pages.render`) is the same file compiled with every `_("literal")` that has
no arguments replaced by its translation, so it renders as fixed text. Whatever the translation may
change by being inlined is left to the runtime call: texts with markup or quote characters (which
escaping would alter) and texts with `%` (which the runtime call formats).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from jinja2 import BaseLoader, Environment
from jinja2.ext import Extension
from jinja2.lexer import TOKEN_DOT, TOKEN_LPAREN, TOKEN_NAME, TOKEN_RPAREN, TOKEN_STRING, Token, TokenStream

from aftersales import i18n

_LEFT_TO_RUNTIME = set("<>&'\"%")


def locale_of(name: str | None) -> str | None:
    prefix = (name or "").split("/", 1)[0]
    return prefix if prefix in i18n.LOCALES else None


class LocaleLoader(BaseLoader):
    """`zh_CN/tickets/ticket.html` is `tickets/ticket.html` (cached apart); plain names load as before."""

    def __init__(self, inner: BaseLoader) -> None:
        self.inner = inner

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        locale = locale_of(template)
        return self.inner.get_source(environment, template[len(locale) + 1:] if locale else template)

    def list_templates(self) -> list[str]:
        return self.inner.list_templates()


class InlineTranslations(Extension):
    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        locale = locale_of(stream.name)
        if locale is None:
            yield from stream
            return
        catalogue = i18n.translations(locale)
        window: list[Token] = []  # the last tokens, to see `_ ( "text" )` whole
        for token in stream:
            window.append(token)
            if len(window) >= 4 and _is_plain_call(window[-5:]):
                text = catalogue.gettext(window[-2].value)
                if not _LEFT_TO_RUNTIME & set(text) and not _LEFT_TO_RUNTIME & set(window[-2].value):
                    call = window[-4:]
                    del window[-4:]
                    window.append(Token(call[0].lineno, TOKEN_STRING, text))
            if len(window) > 8:
                yield from window[:-5]
                del window[:-5]
        yield from window


def _is_plain_call(tokens: list[Token]) -> bool:
    *before, name, lparen, string, rparen = tokens
    return (name.type == TOKEN_NAME and name.value == "_" and lparen.type == TOKEN_LPAREN
            and string.type == TOKEN_STRING and rparen.type == TOKEN_RPAREN
            and not (before and before[-1].type == TOKEN_DOT))  # `x._("…")` is someone's method


def compile_per_locale(env: Environment) -> None:
    """Serve `<locale>/<name>` from the same files, translated at compile time; includes and
    parents of such a template are asked for in its locale too."""
    assert env.loader is not None
    env.loader = LocaleLoader(env.loader)
    env.add_extension(InlineTranslations)

    def join_path(template: str, parent: str) -> str:
        locale = locale_of(parent)
        return f"{locale}/{template}" if locale and not locale_of(template) else template

    env.join_path = join_path  # type: ignore[method-assign]


def localized(template: str) -> str:
    return f"{i18n.get_locale()}/{template}"

