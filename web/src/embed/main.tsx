// The object-discussion widget: one discussion of one business object, framed
// by an ERP's form (or loaded top-level by 1C's HTML field). Nowhere to
// navigate: no list, no settings, links to the full client open a new tab.
import { render } from 'preact';
import './embed.css';
import { language } from '../i18n';
import { Widget } from './Widget';

document.documentElement.lang = language();
const root = document.getElementById('widget');
if (root) render(<Widget />, root);
