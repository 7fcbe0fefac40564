/*
 * OHIF Viewer configuration for the dicom-ai-node compose stack.
 *
 * The viewer reads studies from Orthanc's DICOMweb (QIDO-RS, WADO-RS; PS3.18). The roots
 * are paths on the viewer's own origin: deploy/ohif/nginx.conf, the viewer's web server,
 * passes /dicom-web/ to http://orthanc:8042/dicom-web/ (read-only: GET only). One origin,
 * so no CORS setup, and it works whatever host name or port the viewer is reached by.
 */
window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (dicom-ai-node stack)',
        name: 'orthanc',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        wadoUriRoot: '/wado',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        dicomUploadEnabled: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      },
    },
  ],
};
