// A generator function: datasets are pulled lazily, a batch at a time, as workers need them.
// This one is open-ended in spirit: a million ranges of 1000 numbers each.
({
  main: function* () {
    for (var start = 0; start < 1e9; start += 1000) {
      yield { min: start, max: start + 1000 };
    }
  },
})
