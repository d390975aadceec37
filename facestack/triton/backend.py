"""Triton python-backend models. Imported only inside Triton's stub (triton_python_backend_utils exists there).

`OnnxModel` runs a model's `model.onnx` with onnxruntime: the CPU stand-in for Triton's onnxruntime
backend, which no registry ships off-GPU. `PipelineModel` is the face pipeline (in-process models or BLS).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from facestack.pipeline import detection, mesh, pad
from facestack.pipeline.faces import FacePipeline, Faces, Options
from facestack.pipeline.image import ImageError
from facestack.pipeline.runtime import InProcessModels, embedder_specs
from facestack.pipeline.sessions import onnx_session, session_options
from facestack.triton.contract import EYES_OUTPUT, MESH_INPUT, MESH_POSE_OUTPUT, PAD_OUTPUT
from facestack.triton.model_config import PipelineParameters, parameters


def _error_responses(requests: list, message: str) -> list:
    return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]


class OnnxModel:
    """Dynamic-batched onnxruntime model: Triton hands over several requests, we run them as one batch."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = parameters(config)
        path = Path(args["model_repository"]) / args["model_version"] / params.get("onnx_file", "model.onnx")
        self.session = onnx_session(path, session_options(int(params.get("intra_op_threads", "0"))))
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list) -> list:
        inputs = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name in self.input_names}
        sizes = [array.shape[0] for array in inputs[self.input_names[0]]]
        try:
            outputs = self.session.run(self.output_names, {k: np.concatenate(v) for k, v in inputs.items()})
        except Exception as exc:  # a bad shape from a client must fail its requests, not the model
            return _error_responses(requests, f"inference failed: {exc}")
        splits = np.cumsum(sizes)[:-1]
        per_request = zip(*(np.split(out, splits) for out in outputs), strict=True)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(a))
                                            for n, a in zip(self.output_names, arrays, strict=True)])
                for arrays in per_request]


class PipelineModel:
    """The face pipeline: decode -> fit to a detector size -> detect -> NMS -> align -> embed, per batch of images.

    The parameter `composing_models` says where the detector and embedders run: "in_process" (CPU nodes:
    onnxruntime sessions inside this model's own process, no hop per model call) or "triton" (GPU nodes:
    BLS calls to face_detector and face_embedder*, which run in Triton's native backends there).
    """

    def initialize(self, args: dict) -> None:
        params = PipelineParameters.from_config(json.loads(args["model_config"]))
        repository = Path(args["model_repository"]).parent
        self.detector = params.detector_model
        self.embed_batch = params.embedder_max_batch
        specs, self.versions = embedder_specs(repository, params.embedders)
        self.models = {spec.name: spec.model for spec in specs}
        self.composing = params.composing_models
        if self.composing == "in_process":
            local = InProcessModels(repository, specs, params.intra_op_threads, self.detector)
            detect, embed = local.detect, local.embed
        elif self.composing == "triton":
            detect, embed = self._detect, self._embed
        else:
            raise pb_utils.TritonModelException(
                f"composing_models must be in_process or triton, not {self.composing!r}")
        pad_score = self._pad_model(repository, params.pad_model, params.intra_op_threads)
        # The face mesh runs in this process in every composing mode (a ~7 ms CPU model, asked for by liveness
        # frames only); `make models` exports it (a repository without it runs without).
        mesh_dir = mesh.model_dir(repository, params.mesh_model)
        face_mesh = mesh.FaceMesh(mesh_dir, threads=max(1, params.intra_op_threads)) if mesh_dir else None
        self.pipeline = FacePipeline(detect, embed, specs, params, pad_score=pad_score, face_mesh=face_mesh)

    def _pad_model(self, repository: Path, name: str, threads: int) -> pad.PadFn | None:
        """The face_pad slot (facestack.pipeline.pad): called when `pad_model` names a model that is in the
        repository; otherwise the pipeline's outputs are exactly as without it."""
        if not name or not (repository / name).is_dir():
            return None
        if self.composing == "triton":
            return lambda crops: np.concatenate([
                self._infer(name, crops[i:i + self.embed_batch], [pad.OUTPUT_NAME])[pad.OUTPUT_NAME]
                for i in range(0, len(crops), self.embed_batch)])
        path = pad.model_file(repository, name)
        if path is None:
            return None
        session = onnx_session(path, session_options(threads))
        return lambda crops: session.run([pad.OUTPUT_NAME], {pad.INPUT_NAME: crops})[0]

    @staticmethod
    def _infer(model: str, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs,
                                            inputs=[pb_utils.Tensor("input", batch)])
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def _detect(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self._infer(self.detector, batch, list(detection.OUTPUT_NAMES))

    def _embed(self, embedder: str, crops: np.ndarray) -> np.ndarray:
        # Chunks keep one call within the embedder's max_batch_size.
        chunks = [self._infer(self.models[embedder], crops[i:i + self.embed_batch], ["embedding"])["embedding"]
                  for i in range(0, len(crops), self.embed_batch)]
        return np.concatenate(chunks)

    def _options(self, request) -> Options:
        def scalar(name: str, default):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

        embedder = scalar("EMBEDDER", b"")  # "": the pipeline's default_embedder
        return Options(max_faces=int(scalar("MAX_FACES", Options.max_faces)),
                       min_face_size=float(scalar("MIN_FACE_SIZE", Options.min_face_size)),
                       embedder=embedder.decode() if isinstance(embedder, bytes) else str(embedder),
                       mesh=bool(scalar(MESH_INPUT, False)))

    def _response(self, faces: Faces) -> object:
        tensors = {
            "BOXES": faces.boxes.astype(np.float32), "SCORES": faces.scores.astype(np.float32),
            "LANDMARKS": faces.landmarks.astype(np.float32), "EMBEDDINGS": faces.embeddings.astype(np.float32),
            "QUALITY": faces.quality.astype(np.float32),
        }
        out = [pb_utils.Tensor(name, np.ascontiguousarray(array[None])) for name, array in tensors.items()]
        if faces.pad_scores is not None:  # optional output: only while a face_pad model runs
            out.append(pb_utils.Tensor(PAD_OUTPUT, np.ascontiguousarray(faces.pad_scores.astype(np.float32)[None])))
        if faces.mesh_pose is not None:  # optional outputs: only when asked (MESH) and the mesh is exported
            out.append(pb_utils.Tensor(MESH_POSE_OUTPUT, np.ascontiguousarray(faces.mesh_pose[None])))
            out.append(pb_utils.Tensor(EYES_OUTPUT, np.ascontiguousarray(faces.eye_openness[None])))
        out.append(pb_utils.Tensor("IMAGE_SIZE", np.array([faces.image_size], np.int32)))
        out.append(pb_utils.Tensor("EMBEDDER_MODEL", np.array([[self.versions[faces.embedder.name].encode()]],
                                                               dtype=object)))
        return pb_utils.InferenceResponse(out)

    def execute(self, requests: list) -> list:
        images, options, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)[0]
                option = self._options(request)
            except Exception as exc:  # malformed request tensors
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"invalid_argument: {exc}"))
                continue
            images.append(bytes(image))
            options.append(option)
        valid = [i for i, r in enumerate(responses) if r is None]
        try:
            results = self.pipeline.run(images, options)
        except Exception as exc:  # a composing model failed: fail these requests, keep serving
            return [r or pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal: {exc}")) for r in responses]
        for i, result in zip(valid, results, strict=True):
            responses[i] = (pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result)))
                            if isinstance(result, ImageError) else self._response(result))
        return responses
