#!/usr/bin/env node
// GSPS check: read a Grayscale Softcopy Presentation State with dcmjs 0.52.0, the DICOM
// parser OHIF 3.13 ships, and print its graphic annotations as JSON on stdout.
//
//   node gsps.mjs FILE
//
// OHIF 3.13.2 itself has no SOP class handler for presentation states (its study
// browser says "SOP Class UID is not supported." for one), and neither dcmjs 0.52 nor
// @cornerstonejs/adapters 5.6.8 turns one into annotations. What a viewer built on them
// could draw is what dcmjs parses: DicomMessage.readFile + naturalizeDataset, as OHIF
// reads DICOM files. Printed per Graphic Annotation item (PS3.3 C.10.5): its layer, the
// images it applies to, each graphic object (type, units, number of points, the points,
// filled) and each text object (text, units, bounding box or anchor); and the layers
// (PS3.3 C.10.7) and the Softcopy VOI LUT (PS3.3 C.11.8) windows.
import fs from 'node:fs';
import process from 'node:process';

import dcmjs from 'dcmjs';

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

const asArray = (value) =>
  value === undefined || value === null ? [] : Array.isArray(value) ? value : [value];
const num = (values) => asArray(values).map(Number);

function read(file) {
  const buffer = fs.readFileSync(file);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const message = DicomMessage.readFile(arrayBuffer);
  return DicomMetaDictionary.naturalizeDataset(message.dict);
}

function graphic(item) {
  const data = num(item.GraphicData);
  return {
    type: item.GraphicType,
    units: item.GraphicAnnotationUnits,
    points: Number(item.NumberOfGraphicPoints),
    data,
    filled: item.GraphicFilled ?? null,
  };
}

function text(item) {
  return {
    text: item.UnformattedTextValue,
    boxUnits: item.BoundingBoxAnnotationUnits ?? null,
    topLeft: num(item.BoundingBoxTopLeftHandCorner),
    bottomRight: num(item.BoundingBoxBottomRightHandCorner),
    anchorUnits: item.AnchorPointAnnotationUnits ?? null,
    anchor: num(item.AnchorPoint),
  };
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node gsps.mjs FILE\n');
  process.exit(2);
}
const ds = read(file);
const out = {
  versions: { dcmjs: dcmjs.version ?? null },
  sopClassUID: ds.SOPClassUID,
  modality: ds.Modality,
  contentLabel: ds.ContentLabel,
  layers: asArray(ds.GraphicLayerSequence).map((layer) => ({
    name: layer.GraphicLayer,
    order: Number(layer.GraphicLayerOrder),
    description: layer.GraphicLayerDescription ?? null,
  })),
  annotations: asArray(ds.GraphicAnnotationSequence).map((item) => ({
    layer: item.GraphicLayer,
    images: asArray(item.ReferencedImageSequence).map((ref) => ref.ReferencedSOPInstanceUID),
    graphics: asArray(item.GraphicObjectSequence).map(graphic),
    texts: asArray(item.TextObjectSequence).map(text),
  })),
  voi: asArray(ds.SoftcopyVOILUTSequence).map((item) => ({
    images: asArray(item.ReferencedImageSequence).map((ref) => ref.ReferencedSOPInstanceUID),
    center: num(item.WindowCenter),
    width: num(item.WindowWidth),
  })),
};
process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
