package dsar

// SubmitBatch exposes submitBatch to the external tests, which must send
// more than one batch to reach SubmitData's intermediate writes.
const SubmitBatch = submitBatch
