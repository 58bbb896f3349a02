// What the worker bootstrap removes from the kernel's global scope before the kernel runs.
//
// The runner's policy (`connect-src 'none'`, `default-src 'none'`) blocks every request a worker can
// make through fetch, XHR, WebSocket, EventSource or importScripts, and the attack tests show it; those
// stay in place on purpose. What is removed here is what the policy does not govern, or not in every
// browser: peer-to-peer and QUIC channels (WebRTC, WebTransport), font loading (FontFace, `fonts`),
// the GPU (`navigator.gpu`) and off-screen rendering (OffscreenCanvas), and nested workers, which
// `worker-src blob:` would allow beyond the visitor's throttle.

export const REMOVED_GLOBALS = Object.freeze([
  "Worker",
  "SharedWorker",
  "RTCPeerConnection",
  "webkitRTCPeerConnection",
  "RTCDataChannel",
  "RTCRtpScriptTransformer",
  "RTCEncodedVideoFrame",
  "RTCEncodedAudioFrame",
  "RTCIceCandidate",
  "RTCSessionDescription",
  "WebTransport",
  "WebTransportError",
  "FontFace",
  "fonts",
  "OffscreenCanvas",
  "OffscreenCanvasRenderingContext2D",
  "WebGLRenderingContext",
  "WebGL2RenderingContext",
  "GPU",
  "GPUAdapter",
  "GPUDevice",
]);

export const REMOVED_FROM_NAVIGATOR = Object.freeze(["gpu"]);

// Deletes `name` from `target` and from every prototype it inherits it from (Web IDL attributes such
// as `fonts` or `navigator.gpu` live on prototypes). Where a property cannot be deleted, it is
// shadowed with a non-writable, non-configurable undefined. Returns false if `name` still resolves.
export function remove(target, name) {
  for (let object = target; object !== null && object !== Object.prototype; object = Object.getPrototypeOf(object)) {
    if (Object.prototype.hasOwnProperty.call(object, name)) {
      try {
        delete object[name];
      } catch {
        /* non-configurable: shadowed below */
      }
    }
  }
  if (target[name] === undefined) return true;
  try {
    Object.defineProperty(target, name, { value: undefined, writable: false, configurable: false, enumerable: false });
  } catch {
    return false;
  }
  return target[name] === undefined;
}

// Removes every capability above from `scope` (the worker's global scope). Returns the names it
// could not remove: the bootstrap refuses to run the kernel if there are any.
export function confine(scope) {
  const left = REMOVED_GLOBALS.filter((name) => !remove(scope, name));
  if (scope.navigator) {
    for (const name of REMOVED_FROM_NAVIGATOR) if (!remove(scope.navigator, name)) left.push(`navigator.${name}`);
  }
  return left;
}
