// What the model server speaks (src/modelport/serving/asgi.py and protocols/): the seed's
// POST {url}/predict {"instances": rows}, KServe V1 POST {url}/v1/models/{name}:predict with the
// same body, and the Open Inference Protocol V2 POST {url}/v2/models/{name}/infer with one FP64
// tensor. Its metadata (GET {url}/v2/models/{name}) gives the number of features and the classes.

export const PROTOCOLS = [
  { id: "seed", label: "modelport (seed)" },
  { id: "v1", label: "KServe V1" },
  { id: "v2", label: "Open Inference V2" },
];

export function predictPath(protocol, modelName = "model") {
  if (protocol === "v1") return `/v1/models/${modelName}:predict`;
  if (protocol === "v2") return `/v2/models/${modelName}/infer`;
  return "/predict";
}

export function requestBody(protocol, rows) {
  if (protocol === "v2") {
    const width = rows.length ? rows[0].length : 0;
    return { inputs: [{ name: "input-0", shape: [rows.length, width], datatype: "FP64", data: rows.flat() }] };
  }
  return { instances: rows };
}

/** The predictions in any protocol's answer. */
export function predictionsOf(protocol, answer) {
  if (protocol === "v2") {
    const out = (answer.outputs || []).find((o) => o.name === "output-0") || (answer.outputs || [])[0];
    return out ? out.data : undefined;
  }
  return answer.predictions;
}

/** Sample rows for a model that takes `features` numbers per row (a stable, readable pattern). */
export function sampleRows(features, count = 2) {
  const width = features && features > 0 ? features : 4;
  const rows = [];
  for (let r = 0; r < count; r++) {
    rows.push(Array.from({ length: width }, (_, c) => Math.round((1 + ((r * 7 + c * 3) % 10) / 2) * 10) / 10));
  }
  return rows;
}

export function featuresOf(metadata) {
  const shape = metadata && metadata.inputs && metadata.inputs[0] && metadata.inputs[0].shape;
  const width = shape && shape.length > 1 ? shape[1] : -1;
  return width > 0 ? width : null;
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curl(url, protocol, rows, { modelName = "model", protected: needsToken = false } = {}) {
  const lines = [`curl -sS -X POST ${shellQuote(url + predictPath(protocol, modelName))}`,
    "  -H 'Content-Type: application/json'"];
  if (needsToken) lines.push("  -H \"Authorization: Bearer $MODELPORT_TOKEN\"");
  lines.push(`  -d ${shellQuote(JSON.stringify(requestBody(protocol, rows)))}`);
  return lines.join(" \\\n");
}
