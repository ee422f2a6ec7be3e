from astara.api.auth import digest, new_token


def test_tokens_never_look_like_a_command_line_option() -> None:
    # One token_urlsafe in 64 starts with "-", which `--os-token TOKEN` takes
    # for an option: 2,000 draws would all but surely show one.
    tokens = [new_token() for _ in range(2000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens) and all(len(t) == 43 for t in tokens)
    assert len(digest(tokens[0])) == 64
