//! The two ways to ask for contrasts (CLI expressions and a BIDS Stats Models file) give the
//! same contrast vectors and the same maps; bad requests give typed errors.

use tribe_bids::Error;
use tribe_bids::analysis::contrast::ContrastSpec;
use tribe_bids::analysis::design::{
    DesignOptions, Event, frame_times, make_first_level_design_matrix,
};
use tribe_bids::analysis::glm::{GlmOptions, fit};
use tribe_bids::analysis::smdl::read_stats_model;

const MODEL: &str = r#"{
  "Name": "localizer", "BIDSModelVersion": "1.0.0",
  "Input": {"task": ["localizer"]},
  "Nodes": [
    {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
     "Model": {"Type": "glm", "X": ["trial_type.faces", "trial_type.places", "trial_type.objects", 1]},
     "Contrasts": [
       {"Name": "faces_vs_places", "ConditionList": ["trial_type.faces", "trial_type.places"], "Weights": [1, -1], "Test": "t"},
       {"Name": "mix", "ConditionList": ["trial_type.faces", "trial_type.places", "trial_type.objects"], "Weights": [0.5, 0.5, -1], "Test": "t"}
     ]}
  ]
}"#;

#[test]
fn stats_model_and_cli_give_the_same_maps() {
    let ft = frame_times(80, 1.5, 0.0);
    let conds = ["faces", "places", "objects"];
    let ev: Vec<Event> = (0..18)
        .map(|i| Event::new(2.0 + 6.5 * i as f64, 2.0, conds[i % 3]))
        .collect();
    let design = make_first_level_design_matrix(&ft, &ev, &DesignOptions::default()).unwrap();
    let nv = 64;
    let y: Vec<f32> = (0..80 * nv)
        .map(|i| ((i * 2654435761usize % 1000) as f32 / 500.0 - 1.0) + (i % nv) as f32 * 0.01)
        .collect();
    let glm = fit(&y, nv, &design, &GlmOptions::default()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model-localizer_smdl.json");
    std::fs::write(&path, MODEL).unwrap();
    let model = read_stats_model(&path).unwrap();
    let from_model = model.run_contrasts();
    let from_cli: Vec<ContrastSpec> = [
        "faces_vs_places=faces - places",
        "mix=0.5*faces+0.5*places-objects",
    ]
    .iter()
    .map(|s| ContrastSpec::parse_cli(s, &design.columns).unwrap())
    .collect();
    assert_eq!(from_model.len(), 2);
    for (a, b) in from_model.iter().zip(&from_cli) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            a.vector(&design.columns).unwrap(),
            b.vector(&design.columns).unwrap()
        );
        let ma = glm.contrast_spec(a).unwrap();
        let mb = glm.contrast_spec(b).unwrap();
        assert_eq!(ma.z, mb.z);
        assert_eq!(ma.effect, mb.effect);
    }
    assert_eq!(from_cli[0].label(), "facesVsPlaces");
}

#[test]
fn unknown_condition_and_bad_files_are_typed_errors() {
    let cols: Vec<String> = ["faces", "places", "constant"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let e = ContrastSpec::parse_cli("faces-hosues", &cols).unwrap_err();
    assert!(matches!(&e, Error::UnknownCondition { name, .. } if name == "hosues"));
    assert!(
        e.to_string()
            .contains("valid conditions: faces, places, constant"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model-bad_smdl.json");
    std::fs::write(&path, r#"{"Name": "x", "Steps": []}"#).unwrap();
    let e = read_stats_model(&path).unwrap_err();
    assert!(matches!(e, Error::Json { .. }));
    assert!(
        e.to_string().contains("model-bad_smdl.json") && e.to_string().contains("Nodes"),
        "{e}"
    );
    let e = read_stats_model(&dir.path().join("missing_smdl.json")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
}
