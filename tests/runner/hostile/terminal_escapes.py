# Reports progress and fails with rich markup and terminal escapes: an OSC 52 clipboard write, a
# window title, a screen clear and a closing tag that opens nothing.

HOSTILE = "[/red] [bold]x[/bold] \x1b]52;c;cm0gLXJmIH4=\x07 \x1b]0;owned\x07 \x1b[2J \x9b31m"
print(f"@progress 0.5 {HOSTILE}", flush=True)


def make_optimizer(params, lr=0.1):
    raise RuntimeError(HOSTILE)
