// sd-talking-head: helpers the WebUI's "Send to Talking Head" buttons call (infotext_utils binds
// them as switch_to_<tab> and recalculate_prompts_<tab> for the tab id "talking_head").

function switch_to_talking_head() {
    var app = gradioApp();
    var buttons = app.querySelectorAll('#tabs > .tab-nav > button, #tabs > div > button');
    var target = null;
    buttons.forEach(function(button) {
        if (button.textContent.trim() === 'Talking Head') {
            target = button;
        }
    });
    if (target === null) {  // match by position of the tab's panel among the tab panels
        var panels = Array.from(app.querySelectorAll('#tabs > .tabitem, #tabs > div[role="tabpanel"]'));
        var index = panels.indexOf(app.getElementById('tab_talking_head'));
        if (index >= 0 && index < buttons.length) {
            target = buttons[index];
        }
    }
    if (target !== null) {
        target.click();
    }
    return Array.from(arguments);
}

function recalculate_prompts_talking_head() {
    return Array.from(arguments);
}

// The name of a file dropped onto the Talking Head source image (gradio 3.41 reads a drop without filling the
// file input): the tab's upload handler (IMAGE_UPLOAD_JS in sadtalker_ext/ui/tab.py) records it in the sidecar.
document.addEventListener('drop', function(e) {
    var target = e.target;
    if (!target || !target.closest || !target.closest('#th_image')) {
        return;
    }
    var files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) {
        window.talkingHeadDrop = {name: files[0].name, time: Date.now()};
    }
}, true);
