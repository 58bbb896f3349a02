// The text of a kernel worker: the bootstrap bundle, then the campaign's kernel expression wrapped
// in a function the bootstrap calls once it has secured its own references.
//
// The kernel goes into the blob's text itself because the runner's CSP forbids eval. `var kernel =`
// followed by a line break accepts every way a kernel expression is written in practice: leading
// comments, a trailing semicolon, a trailing line comment.

export function kernelBlobParts(workerSource, kernelSource) {
  const head = `${workerSource}\n;__distribute.start(function () {\nvar kernel =\n`;
  return {
    parts: [head, kernelSource, "\n;\nreturn kernel;\n});\n"],
    // Line N of the kernel is line N + lineOffset of the blob: stack traces are mapped back with it.
    lineOffset: head.split("\n").length - 1,
  };
}
