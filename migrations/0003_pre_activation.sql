-- Rankings before the activation, and one top-K entry per distinct content.

-- What each layer's peaks are: `stage` 'pre' when they were taken before the layer's
-- activation (the BatchNorm-folded conv output, or the residual sum), which is then
-- `activation` ('none', 'relu', 'relu6'); 'post' for peaks of the activated output, as
-- every database made before this migration holds (their activation is not recorded).
-- The activation being monotone, a peak after it is activation(peak before) at the
-- same place.
ALTER TABLE layer ADD COLUMN stage TEXT NOT NULL DEFAULT 'post' CHECK (stage IN ('pre', 'post'));
ALTER TABLE layer ADD COLUMN activation TEXT;

-- 1: every file enters the top-K lists; 0: only the first indexed file of each content
-- (sha256) does. Databases made before this migration kept every file.
ALTER TABLE run ADD COLUMN keep_duplicates INTEGER NOT NULL DEFAULT 1;

CREATE INDEX image_sha256 ON image (sha256);
