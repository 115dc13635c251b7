"""Refuses field and oneof names of the wire protocol that are keywords in a
language with a stock gRPC stack: their generators rename such fields
(C++ `new_()`, `case_()`), so the same field would have different names in
different clients. Reads the descriptor set protoc wrote (argv[1]). The
on-disk records of store.proto are not part of the wire protocol."""
import keyword
import sys

from google.protobuf import descriptor_pb2

WORDS = {
    "python": set(keyword.kwlist) | set(getattr(keyword, "softkwlist", [])),
    "c++": set("""alignas alignof and and_eq asm auto bitand bitor bool break case catch
        char char8_t char16_t char32_t class compl concept const consteval constexpr
        constinit const_cast continue co_await co_return co_yield decltype default delete
        do double dynamic_cast else enum explicit export extern false float for friend goto
        if inline int long mutable namespace new noexcept not not_eq nullptr operator or
        or_eq private protected public register reinterpret_cast requires return short
        signed sizeof static static_assert static_cast struct switch template this
        thread_local throw true try typedef typeid typename union unsigned using virtual
        void volatile wchar_t while xor xor_eq""".split()),
    "java": set("""abstract assert boolean break byte case catch char class const continue
        default do double else enum extends final finally float for goto if implements
        import instanceof int interface long native new package private protected public
        return short static strictfp super switch synchronized this throw throws transient
        try void volatile while true false null var record yield""".split()),
    "go": set("""break default func interface select case defer go map struct chan else
        goto package switch const fallthrough if range type continue for import return
        var""".split()),
    "c#": set("""abstract as base bool break byte case catch char checked class const
        continue decimal default delegate do double else enum event explicit extern false
        finally fixed float for foreach goto if implicit in int interface internal is lock
        long namespace new null object operator out override params private protected
        public readonly ref return sbyte sealed short sizeof stackalloc static string
        struct switch this throw true try typeof uint ulong unchecked unsafe ushort using
        virtual void volatile while""".split()),
    "javascript": set("""break case catch class const continue debugger default delete
        do else export extends finally for function if import in instanceof new return
        super switch this throw try typeof var void while with yield let static enum await
        implements package protected interface private public null true false""".split()),
}
NOT_WIRE = {"meldnet/v1/store.proto"}


def names(messages, prefix=""):
    for m in messages:
        for f in m.field:
            yield f"{prefix}{m.name}.{f.name}", f.name
        for o in m.oneof_decl:
            yield f"{prefix}{m.name}.{o.name} (oneof)", o.name
        yield from names(m.nested_type, f"{prefix}{m.name}.")


def main():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(sys.argv[1], "rb") as f:
        fds.ParseFromString(f.read())
    bad = []
    for file in fds.file:
        if file.name in NOT_WIRE or not file.name.startswith("meldnet/"):
            continue
        for where, name in names(file.message_type):
            langs = [lang for lang, words in WORDS.items() if name in words]
            if langs:
                bad.append(f"{file.name}: {where}: a keyword in {', '.join(langs)}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)
    print(f"protoc: no field of the wire protocol is named as a keyword")


if __name__ == "__main__":
    main()
