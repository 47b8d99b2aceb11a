// A version's files straight to the object store through the presigned POST the API hands out
// (POST /api/v1/versions/{id}/upload-url), as the CLI does: the form fields in order, then the
// file as the last field "file". XMLHttpRequest, for upload progress events.

import { ApiError } from "./api.js";

function s3Message(xhr) {
  // S3 answers errors as XML: <Error><Code>..</Code><Message>..</Message></Error>
  const text = xhr.responseText || "";
  const message = /<Message>([^<]*)<\/Message>/.exec(text);
  const code = /<Code>([^<]*)<\/Code>/.exec(text);
  return [code ? code[1] : "upload_failed", message ? message[1] : `the object store answered ${xhr.status}`];
}

/** POST one file to a presigned target; onProgress(bytesSent) while it goes. */
export function postPresigned(target, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(target.fields)) form.append(name, value);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", target.url);
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size);
        resolve();
      } else {
        const [code, message] = s3Message(xhr);
        reject(new ApiError(xhr.status, code, `${file.name}: ${message}`));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "upload_failed",
      `${file.name}: the object store could not be reached at ${new URL(target.url).origin} (network or CORS)`)));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "upload_aborted", `${file.name}: upload cancelled`)));
    xhr.send(form);
  });
}

/** Send model (and requirements, first: the model completes the version) to the targets.
 *  onProgress(fraction 0..1). */
export async function uploadFiles(targets, model, requirements, onProgress) {
  if (targets.max_bytes && model.size > targets.max_bytes) {
    throw new ApiError(413, "file_too_large", `${model.name} is ${model.size} bytes; the limit is ${targets.max_bytes} bytes`);
  }
  const total = model.size + (requirements ? requirements.size : 0) || 1;
  let done = 0;
  if (requirements) {
    await postPresigned(targets.requirements, requirements, (n) => onProgress(Math.min(1, n / total)));
    done = requirements.size;
  }
  await postPresigned(targets.model, model, (n) => onProgress(Math.min(1, (done + n) / total)));
}
