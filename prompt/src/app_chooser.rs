//! `org.freedesktop.impl.portal.AppChooser` (version 2): the dialog that
//! picks the app a URI or file opens with. The frontend passes the
//! candidates (desktop ids without `.desktop`) and `last_choice`,
//! `content_type`, `uri`, `filename`, `activation_token`; the answer is
//! `choice` (scripted: the script's `choice`; terminal: a number from the
//! listed candidates). The dialog is shown, recorded and closed like every
//! other ([`crate::dialog`]); the candidates appear in its options as
//! `choices` (`as`), so the record and the terminal show them.

use std::sync::{Arc, Mutex};

use zbus::ObjectServer;
use zbus::message::Header;
use zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::dialog::{Asked, Dialogs, Results};
use crate::script::Method;

/// The candidates of a dialog as its options carry them.
pub const CHOICES_KEY: &str = "choices";

/// `org.freedesktop.impl.portal.AppChooser`.
pub struct AppChooser(pub Arc<Dialogs>);

/// The latest candidates sent with `UpdateChoices`, by dialog handle.
static UPDATED: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());

#[zbus::interface(name = "org.freedesktop.impl.portal.AppChooser")]
impl AppChooser {
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("response", "results"))]
    async fn choose_application(
        &self,
        handle: OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        choices: Vec<String>,
        options: Results,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> (u32, Results) {
        let mut shown = Results::new();
        for (k, v) in &options {
            if let Ok(v) = v.try_clone() {
                shown.insert(k.clone(), v);
            }
        }
        match OwnedValue::try_from(Value::from(choices)) {
            Ok(v) => {
                shown.insert(CHOICES_KEY.to_owned(), v);
            }
            Err(e) => tracing::error!("the candidates: {e}"),
        }
        let asked = Asked {
            method: Method::ChooseApplication,
            handle: &handle,
            app_id,
            parent_window,
            title: "",
            text: None,
            options: &shown,
        };
        let answer = self.0.show(server, &hdr, asked).await;
        UPDATED
            .lock()
            .expect("updates lock")
            .retain(|(h, _)| h != handle.as_str());
        answer
    }

    /// The installed apps changed while the dialog is up: logged, and
    /// kept for the terminal's next reading of the candidates.
    async fn update_choices(&self, handle: OwnedObjectPath, choices: Vec<String>) {
        tracing::info!(%handle, ?choices, "UpdateChoices");
        let mut updated = UPDATED.lock().expect("updates lock");
        updated.retain(|(h, _)| h != handle.as_str());
        updated.push((handle.to_string(), choices));
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        2
    }
}

/// The candidates of the dialog at `handle`: the latest `UpdateChoices`,
/// else those in its options.
pub(crate) fn candidates(handle: &str, options: &Results) -> Vec<String> {
    if let Some((_, c)) = UPDATED
        .lock()
        .expect("updates lock")
        .iter()
        .find(|(h, _)| h == handle)
    {
        return c.clone();
    }
    options
        .get(CHOICES_KEY)
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<String>::try_from(v).ok())
        .unwrap_or_default()
}
