#!/usr/bin/env node
// Viewer check: load our SR and SEG the way OHIF 3.13 does, with the libraries it ships
// (dcmjs 0.52.0, @cornerstonejs/core, tools and adapters 5.6.8), and print what it finds
// as JSON on stdout.
//
//   node check.mjs --source DIR [--sr FILE] [--seg FILE]
//
// DIR holds the source series (*.dcm). All DICOM parsing is done by dcmjs
// (DicomMessage.readFile + naturalizeDataset), as OHIF does for DICOM files.
//
// SR: OHIF 3.13's extension cornerstone-dicom-sr (getSopClassHandlerModule) decides what
// it can show. Its rules are replicated below from @ohif/extension-cornerstone-dicom-sr
// 3.13.13 (that package needs React and the OHIF app to load, so it cannot run here):
//   - root Concept Name (126000, DCM) "Imaging Measurement Report", else no measurements;
//   - groups = (125007, DCM) items of the (126010, DCM) "Imaging Measurements" container,
//     merged by Tracking Unique Identifier (112040) - a group without one throws;
//   - a group with a SCOORD/SCOORD3D is a "TID 1410" measurement: coords, Tracking
//     Identifier (112039) text, NUM labels "value unit", finding site (363698007) label;
//     a group without one gets no coords, and the SR viewport cannot show it;
//   - the SCOORD's IMAGE child must reference an instance of a loaded image series;
//   - DICOMSRDisplayTool draws POINT, MULTIPOINT, POLYLINE, CIRCLE and ELLIPSE.
// Whether OHIF could turn a group into an editable tool ("rehydrate") is asked of the
// real adapters registry (MeasurementReport.getAdapterForTrackingIdentifier and
// getAdaptersForTypes, as OHIF's isRehydratable does). Image -> patient coordinates
// use the adapters' scoordToWorld (core's imageToWorldCoords), as the display tool does.
//
// SEG: OHIF 3.13's extension cornerstone-dicom-seg calls
// adaptersSEG.Cornerstone3D.Segmentation.createFromDicomSegImageId, which fetches SEG
// frames through the browser image loader (web workers). In Node we call
// createLabelmapsFromDICOMBuffer: the same createLabelmapsFromSegImageIds code path
// (frame-to-source matching, orientation checks, labelmap images in core's cache), with
// the frames decoded by dcmjs from the file instead of by the image loader. Segment
// colours are converted from CIELab with dcmjs' Colors.dicomlab2RGB like OHIF does.
import fs from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { parseArgs } from 'node:util';

import dcmjs from 'dcmjs';
import * as core from '@cornerstonejs/core';
import { adaptersSEG, adaptersSR, helpers } from '@cornerstonejs/adapters';

const { DicomMessage, DicomMetaDictionary, Colors } = dcmjs.data;

const CODES = {
  ImagingMeasurementReport: '126000',
  ImagingMeasurements: '126010',
  MeasurementGroup: '125007',
  TrackingIdentifier: '112039',
  TrackingUniqueIdentifier: '112040',
  FindingSite: '363698007',
  Finding: '121071',
};
const DISPLAYABLE = new Set(['POINT', 'MULTIPOINT', 'POLYLINE', 'CIRCLE', 'ELLIPSE']);

function readDicom(file) {
  const buffer = fs.readFileSync(file);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const message = DicomMessage.readFile(arrayBuffer);
  const dataset = DicomMetaDictionary.naturalizeDataset(message.dict);
  dataset._meta = DicomMetaDictionary.namifyDataset(message.meta);
  return { dataset, arrayBuffer };
}

const asArray = (value) => (value === undefined || value === null ? [] : Array.isArray(value) ? value : [value]);
const first = (value) => asArray(value)[0];
const codeOf = (item) => first(item?.ConceptNameCodeSequence) ?? {};
const num = (values) => asArray(values).map(Number);

// ---------------------------------------------------------------- source + metadata
// The modules OHIF's MetadataProvider derives from instance metadata, for the few
// modules the SEG adapter and imageToWorldCoords ask for.
function loadSource(dir) {
  const files = fs.readdirSync(dir).filter((name) => name.toLowerCase().endsWith('.dcm')).sort();
  const instances = new Map();
  for (const name of files) {
    const { dataset } = readDicom(path.join(dir, name));
    instances.set(`dicomfile:${path.join(dir, name)}`, dataset);
  }
  const entries = [...instances.entries()];
  const normal = (ds) => {
    const [a, b, c, d, e, f] = num(ds.ImageOrientationPatient);
    return [b * f - c * e, c * d - a * f, a * e - b * d];
  };
  const along = (ds) => num(ds.ImagePositionPatient).reduce((s, v, i) => s + v * normal(ds)[i], 0);
  const projection = entries.some(([, ds]) => ds.ImageOrientationPatient === undefined);
  if (projection) entries.sort((x, y) => Number(x[1].InstanceNumber) - Number(y[1].InstanceNumber));
  else entries.sort((x, y) => along(x[1]) - along(y[1]));
  return { imageIds: entries.map(([id]) => id), instances: new Map(entries) };
}

function registerMetadata(instances) {
  const modules = {
    instance: (ds) => ds,
    generalImageModule: (ds) => ({ sopInstanceUID: ds.SOPInstanceUID, instanceNumber: Number(ds.InstanceNumber) }),
    sopCommonModule: (ds) => ({ sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID }),
    generalSeriesModule: (ds) => ({ seriesInstanceUID: ds.SeriesInstanceUID, modality: ds.Modality }),
    imagePixelModule: (ds) => ({
      samplesPerPixel: Number(ds.SamplesPerPixel),
      photometricInterpretation: ds.PhotometricInterpretation,
      rows: Number(ds.Rows),
      columns: Number(ds.Columns),
      bitsAllocated: Number(ds.BitsAllocated),
      bitsStored: Number(ds.BitsStored),
      highBit: Number(ds.HighBit),
      pixelRepresentation: Number(ds.PixelRepresentation),
    }),
    imagePlaneModule: (ds) => {
      // A projection radiograph (CR, DX) has no ImageOrientationPatient/Position: the
      // stack viewport then places it as core's getImageDataMetadata does (row cosines
      // [1,0,0], column cosines [0,1,0], origin [0,0,0]), which the world coordinates
      // of its SR outlines follow.
      const projection = ds.ImageOrientationPatient === undefined;
      const iop = projection ? [1, 0, 0, 0, 1, 0] : num(ds.ImageOrientationPatient);
      const spacing = num(ds.PixelSpacing).every((v) => v > 0) ? num(ds.PixelSpacing) : [];
      const [rowSpacing, columnSpacing] = spacing.length === 2 ? spacing : [1, 1];
      return {
        frameOfReferenceUID: ds.FrameOfReferenceUID,
        rows: Number(ds.Rows),
        columns: Number(ds.Columns),
        imageOrientationPatient: iop,
        rowCosines: iop.slice(0, 3),
        columnCosines: iop.slice(3, 6),
        imagePositionPatient: projection ? [0, 0, 0] : num(ds.ImagePositionPatient),
        sliceThickness: Number(ds.SliceThickness),
        pixelSpacing: [rowSpacing, columnSpacing],
        rowPixelSpacing: rowSpacing,
        columnPixelSpacing: columnSpacing,
      };
    },
  };
  core.metaData.addProvider((type, imageId) => {
    const ds = instances.get(imageId);
    return ds && modules[type] ? modules[type](ds) : undefined;
  }, 10000);
}

// ---------------------------------------------------------------- SR
function labelFromNum(item) {
  const value = first(item.MeasuredValueSequence);
  const unit = first(value?.MeasurementUnitsCodeSequence)?.CodeValue;
  const numeric = value?.NumericValue;
  return {
    label: codeOf(item).CodeMeaning,
    value: `${numeric !== undefined ? Number(numeric).toFixed(2) : ''} ${unit}`,
    numericValue: numeric !== undefined ? Number(numeric) : null,
    unit: unit ?? null,
  };
}

function checkGroup(items, source, report) {
  const MeasurementReport = adaptersSR.Cornerstone3D.MeasurementReport;
  const problems = [];
  const trackingUid = items.find((i) => i.ValueType === 'UIDREF')?.UID ?? null;
  const trackingId = items.find((i) => codeOf(i).CodeValue === CODES.TrackingIdentifier)?.TextValue ?? null;
  const graphic = items.find((i) => i.ValueType === 'SCOORD' || i.ValueType === 'SCOORD3D');
  const finding = items.find((i) => codeOf(i).CodeValue === CODES.Finding);
  const site = items.find(
    (i) => codeOf(i).CodeValue === CODES.FindingSite && codeOf(i).CodingSchemeDesignator === 'SCT',
  );
  const labels = items.filter((i) => i.ValueType === 'NUM' && i.MeasuredValueSequence).map(labelFromNum);
  if (site) labels.push({ label: CODES.FindingSite, value: first(site.ConceptCodeSequence)?.CodeMeaning });
  if (!trackingId) problems.push('no Tracking Identifier (112039)');
  const group = {
    trackingIdentifier: trackingId,
    trackingUniqueIdentifier: trackingUid,
    finding: first(finding?.ConceptCodeSequence)?.CodeMeaning ?? null,
    findingSite: first(site?.ConceptCodeSequence)?.CodeMeaning ?? null,
    labels,
    hasGeometry: Boolean(graphic),
    problems,
  };
  if (!graphic) {
    problems.push('no SCOORD/SCOORD3D: OHIF cannot show this group');
    return group;
  }
  const is3D = graphic.ValueType === 'SCOORD3D';
  const data = num(graphic.GraphicData);
  const ref = first(first(graphic.ContentSequence)?.ReferencedSOPSequence);
  const imageId = ref ? source.bySop.get(ref.ReferencedSOPInstanceUID) : undefined;
  Object.assign(group, {
    valueType: graphic.ValueType,
    graphicType: graphic.GraphicType,
    graphicCode: `${codeOf(graphic).CodingSchemeDesignator}:${codeOf(graphic).CodeValue}`,
    pointCount: data.length / (is3D ? 3 : 2),
    closed: data.length >= 4 && data[0] === data[data.length - 2] && data[1] === data[data.length - 1],
    referencedSOPInstanceUID: ref?.ReferencedSOPInstanceUID ?? null,
    referencedSOPClassUID: ref?.ReferencedSOPClassUID ?? null,
    referencesLoadedImage: Boolean(imageId),
    displayTool: DISPLAYABLE.has(graphic.GraphicType) ? 'DICOMSRDisplay' : null,
  });
  if (!DISPLAYABLE.has(graphic.GraphicType)) problems.push(`GraphicType ${graphic.GraphicType} is not drawn`);
  if (!is3D && !imageId) problems.push('SCOORD references no instance of the source series');
  if (imageId) {
    const instance = source.instances.get(imageId);
    if (instance.SOPClassUID !== ref.ReferencedSOPClassUID) problems.push('Referenced SOP Class UID differs');
    const xs = data.filter((_, i) => i % 2 === 0);
    const ys = data.filter((_, i) => i % 2 === 1);
    group.imageBounds = { minX: Math.min(...xs), maxX: Math.max(...xs), minY: Math.min(...ys), maxY: Math.max(...ys) };
    if (group.imageBounds.minX < 0 || group.imageBounds.minY < 0 || group.imageBounds.maxX > Number(instance.Columns) || group.imageBounds.maxY > Number(instance.Rows)) {
      problems.push('SCOORD outside the image');
    }
    const world = helpers.scoordToWorld({ is3DMeasurement: false, referencedImageId: imageId }, graphic);
    const z = world.map((p) => p[2]);
    group.worldZ = [Math.min(...z), Math.max(...z)];
  }
  const adapter = MeasurementReport.getAdapterForTrackingIdentifier(trackingId ?? '');
  const byType = MeasurementReport.getAdaptersForTypes(group.graphicCode, group.graphicType, group.pointCount);
  group.rehydratableAs = [adapter, ...byType].filter(Boolean).map((a) => a.toolType);
  report.push(group);
  return group;
}

function checkSR(file, source) {
  const { dataset } = readDicom(file);
  const result = {
    sopInstanceUID: dataset.SOPInstanceUID,
    seriesDescription: dataset.SeriesDescription ?? null,
    isImagingMeasurementReport: codeOf(dataset).CodeValue === CODES.ImagingMeasurementReport,
    templateIdentifier: first(dataset.ContentTemplateSequence)?.TemplateIdentifier ?? null,
    groups: [],
    problems: [],
  };
  if (!result.isImagingMeasurementReport) {
    result.problems.push('root concept is not (126000, DCM): OHIF shows no measurements');
    return result;
  }
  const content = asArray(dataset.ContentSequence);
  const container = content.find((i) => codeOf(i).CodeValue === CODES.ImagingMeasurements);
  const groups = asArray(container?.ContentSequence).filter((i) => codeOf(i).CodeValue === CODES.MeasurementGroup);
  const merged = new Map();
  for (const group of groups) {
    const items = asArray(group.ContentSequence);
    const uid = items.find((i) => codeOf(i).CodeValue === CODES.TrackingUniqueIdentifier)?.UID;
    if (!uid) {
      result.problems.push('a measurement group has no Tracking Unique Identifier: OHIF throws');
      continue;
    }
    if (merged.has(uid)) merged.get(uid).push(...items.filter((i) => codeOf(i).CodeValue !== CODES.TrackingUniqueIdentifier));
    else merged.set(uid, [...items]);
  }
  const shown = [];
  for (const items of merged.values()) result.groups.push(checkGroup(items, source, shown));
  result.displayedGroups = shown.filter((g) => g.problems.length === 0).length;
  if (result.groups.some((g) => !g.hasGeometry)) {
    result.problems.push('a group without geometry: the OHIF SR viewport cannot show this SR');
  }
  return result;
}

// ---------------------------------------------------------------- SEG
// What dcmjs itself reads of a FRACTIONAL SEG: segments and the largest stored value.
function fractionalSummary(dataset) {
  const pixels = new Uint8Array(asArray(dataset.PixelData)[0] ?? new ArrayBuffer(0));
  let max = 0;
  let nonZero = 0;
  for (let k = 0; k < pixels.length; k++) {
    if (pixels[k] > max) max = pixels[k];
    if (pixels[k] !== 0) nonZero++;
  }
  return {
    fractionalType: dataset.SegmentationFractionalType ?? null,
    maximumFractionalValue: Number(dataset.MaximumFractionalValue),
    largestStoredValue: max,
    nonZeroPixels: nonZero,
    segments: asArray(dataset.SegmentSequence).map((seg) => ({
      label: seg.SegmentLabel ?? null,
      type: first(seg.SegmentedPropertyTypeCodeSequence)?.CodeMeaning ?? null,
    })),
  };
}

async function checkSEG(file, source) {
  const { arrayBuffer, dataset } = readDicom(file);
  const { Segmentation } = adaptersSEG.Cornerstone3D;
  if (dataset.SegmentationType === 'FRACTIONAL') {
    // OHIF 3.13 loads only "pseudo-binary" FRACTIONAL SEGs (values 0 or the maximum);
    // ask the adapters anyway and report what they say, with what dcmjs reads.
    const summary = { sopInstanceUID: dataset.SOPInstanceUID, segmentationType: 'FRACTIONAL', ...fractionalSummary(dataset) };
    try {
      await Segmentation.createLabelmapsFromDICOMBuffer(source.imageIds, arrayBuffer, core.metaData, {
        tolerance: 0.001,
        parserType: 'bitmap',
      });
      summary.ohifLoads = true;
    } catch (error) {
      summary.ohifLoads = false;
      summary.ohifError = String(error.message ?? error);
    }
    return summary;
  }
  let result;
  try {
    result = await Segmentation.createLabelmapsFromDICOMBuffer(source.imageIds, arrayBuffer, core.metaData, {
      tolerance: 0.001,
      parserType: 'bitmap',
    });
  } catch (error) {
    // e.g. a SEG of an image without a Frame of Reference (radiograph, ultrasound still):
    // it has no Plane Orientation, and the adapters' checkOrientation reads one
    return {
      sopInstanceUID: dataset.SOPInstanceUID,
      segmentationType: dataset.SegmentationType,
      numberOfFrames: Number(dataset.NumberOfFrames),
      segments: asArray(dataset.SegmentSequence).map((seg) => ({
        label: seg.SegmentLabel ?? null,
        type: first(seg.SegmentedPropertyTypeCodeSequence)?.CodeMeaning ?? null,
      })),
      ohifLoads: false,
      ohifError: String(error.message ?? error),
    };
  }
  const voxels = {};
  const slices = {};
  for (const images of result.labelMapImages) {
    images.forEach((image, index) => {
      const pixels = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
      for (let k = 0; k < pixels.length; k++) {
        const value = pixels[k];
        if (value !== 0) {
          voxels[value] = (voxels[value] ?? 0) + 1;
          (slices[value] ??= new Set()).add(index);
        }
      }
    });
  }
  const segments = {};
  result.segMetadata.data.forEach((meta, number) => {
    if (!meta || number === 0) return;
    const lab = meta.RecommendedDisplayCIELabValue;
    segments[number] = {
      label: meta.SegmentLabel ?? null,
      type: first(meta.SegmentedPropertyTypeCodeSequence)?.CodeMeaning ?? null,
      algorithmType: meta.SegmentAlgorithmType ?? null,
      rgb: lab ? Colors.dicomlab2RGB(num(lab)).map((c) => Math.round(255 * c)) : null,
      voxels: voxels[number] ?? 0,
      slices: slices[number] ? slices[number].size : 0,
    };
  });
  const unknown = Object.keys(voxels).filter((value) => !(value in segments));
  return {
    sopInstanceUID: dataset.SOPInstanceUID,
    seriesDescription: dataset.SeriesDescription ?? null,
    segmentationType: dataset.SegmentationType,
    numberOfFrames: Number(dataset.NumberOfFrames),
    overlappingSegments: Boolean(result.overlappingSegments),
    ohifLoads: true,
    segments,
    problems: unknown.length ? [`labelmap values without a segment: ${unknown}`] : [],
  };
}

// ---------------------------------------------------------------- main
async function main() {
  const { values } = parseArgs({
    options: { sr: { type: 'string' }, seg: { type: 'string' }, source: { type: 'string' } },
  });
  if (!values.source || (!values.sr && !values.seg)) {
    process.stderr.write('usage: node check.mjs --source DIR [--sr FILE] [--seg FILE]\n');
    process.exit(2);
  }
  const source = loadSource(values.source);
  source.bySop = new Map([...source.instances.entries()].map(([id, ds]) => [ds.SOPInstanceUID, id]));
  registerMetadata(source.instances);
  const out = { versions: versions(), source: { instances: source.imageIds.length } };
  // the libraries print progress with console.log; keep stdout for the JSON
  const log = console.log;
  console.log = (...args) => process.stderr.write(`${args.join(' ')}\n`);
  try {
    if (values.sr) out.sr = checkSR(values.sr, source);
    if (values.seg) out.seg = await checkSEG(values.seg, source);
  } finally {
    console.log = log;
  }
  process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
}

function versions() {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const version = (name) =>
    JSON.parse(fs.readFileSync(path.join(here, 'node_modules', name, 'package.json'), 'utf8')).version;
  return Object.fromEntries(
    ['dcmjs', '@cornerstonejs/core', '@cornerstonejs/tools', '@cornerstonejs/adapters'].map((n) => [n, version(n)]),
  );
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
