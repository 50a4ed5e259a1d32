//! Neuroimaging file formats: NIfTI-1/2, GIFTI, CIFTI-2. One module per format.
