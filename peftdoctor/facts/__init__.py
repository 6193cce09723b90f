"""Facts about one parsed file, computed once and read by every rule."""


def build_facts(module, path):
    raise NotImplementedError
